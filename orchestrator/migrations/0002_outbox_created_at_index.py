"""An index on OutboxEvent.created_at for `events_replay --since/--until`.

Built CONCURRENTLY (so outside a transaction): the outbox is written by every state
change, and a plain CREATE INDEX would block those writes while it builds.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("orchestrator", "0001_initial"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxevent",
            index=models.Index(fields=["created_at"], name="outbox_created_at"),
        ),
    ]
