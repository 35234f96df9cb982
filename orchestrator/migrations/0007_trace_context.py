"""The trace context of a batch and of each outbox event (W3C traceparent)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0006_config_versions"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="traceparent",
            field=models.CharField(blank=True, default="", max_length=55),
        ),
        migrations.AddField(
            model_name="outboxevent",
            name="traceparent",
            field=models.CharField(blank=True, default="", max_length=55),
        ),
    ]
