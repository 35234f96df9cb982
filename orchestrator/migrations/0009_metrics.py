"""A partial index on the SLA events, which /metrics counts at every scrape.

Built CONCURRENTLY (so outside a transaction), as 0002 is: every state change writes the
outbox, and a plain CREATE INDEX would block those writes while it builds.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("orchestrator", "0008_sla")]

    operations = [
        AddIndexConcurrently(
            model_name="outboxevent",
            index=models.Index(
                condition=models.Q(("event_type__in", ["batch.sla_at_risk", "batch.sla_breached"])),
                fields=["event_type"],
                name="outbox_sla_events",
            ),
        ),
    ]
