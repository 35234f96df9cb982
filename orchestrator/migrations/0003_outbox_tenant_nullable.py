"""OutboxEvent.tenant becomes nullable: events of no tenant (`consumer.lag_alert`).

Dropping NOT NULL changes only the catalog: no table rewrite, no long lock.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0002_outbox_created_at_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="outboxevent",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="orchestrator.tenant",
            ),
        ),
    ]
