"""Leases on running work (WorkLease), the phase attempt on chunk records, the per-batch
event `sequence` counter (backfilled from the outbox), and the (batch, state) item index."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orchestrator', '0003_outbox_tenant_nullable'),
    ]

    operations = [
        migrations.CreateModel(
            name='WorkLease',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('start', models.PositiveIntegerField()),
                ('end', models.PositiveIntegerField()),
                ('attempt', models.PositiveIntegerField()),
                ('owner', models.CharField(max_length=200)),
                ('taken_at', models.DateTimeField()),
                ('heartbeat_at', models.DateTimeField()),
                ('leased_until', models.DateTimeField()),
                ('takeovers', models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name='batch',
            name='events_count',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='chunkrun',
            name='attempt',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddIndex(
            model_name='batchitem',
            index=models.Index(fields=['batch', 'state'], name='item_batch_state'),
        ),
        migrations.AddField(
            model_name='worklease',
            name='phase_run',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='leases', to='orchestrator.phaserun'),
        ),
        migrations.AddIndex(
            model_name='worklease',
            index=models.Index(fields=['leased_until'], name='worklease_until'),
        ),
        migrations.AddConstraint(
            model_name='worklease',
            constraint=models.UniqueConstraint(fields=('phase_run', 'start'), name='worklease_unique'),
        ),
        # A batch in flight at the upgrade numbers its next events after the ones it has.
        migrations.RunSQL(
            "UPDATE orchestrator_batch AS b SET events_count = o.n"
            " FROM (SELECT batch_id, count(*) AS n FROM orchestrator_outboxevent"
            " WHERE batch_id IS NOT NULL GROUP BY batch_id) AS o WHERE o.batch_id = b.id",
            migrations.RunSQL.noop,
        ),
    ]
