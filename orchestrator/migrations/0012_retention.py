"""Retention (orchestrator/services/retention.py): when a batch was purged, and item payloads
that may be purged (NULL). Results, phase outputs and reports were nullable already."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0011_audit"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="batchitem",
            name="payload",
            field=models.JSONField(null=True),
        ),
    ]
