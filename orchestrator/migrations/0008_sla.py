"""SLA state of a batch: when it was flagged at risk and breached, and its projected finish."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0007_trace_context"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="sla_at_risk_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="batch",
            name="sla_breached_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="batch",
            name="sla_projected_finish_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
