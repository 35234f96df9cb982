"""The audit log (orchestrator/audit/), append-only in the database too: a trigger refuses
UPDATE always and DELETE unless the transaction set `bos.audit_purge` (the retention purge)."""

import django.db.models.deletion
from django.db import migrations, models


APPEND_ONLY = """
CREATE FUNCTION bos_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('bos.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON orchestrator_auditrecord
    FOR EACH ROW EXECUTE FUNCTION bos_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS audit_append_only ON orchestrator_auditrecord;
DROP FUNCTION IF EXISTS bos_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0010_task_results"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditRecord",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("at", models.DateTimeField()),
                ("actor", models.CharField(max_length=200)),
                ("ip", models.GenericIPAddressField(blank=True, null=True)),
                ("action", models.CharField(max_length=64)),
                ("object_type", models.CharField(blank=True, max_length=64)),
                ("object_id", models.CharField(blank=True, max_length=200)),
                ("outcome", models.CharField(max_length=16)),
                ("detail", models.JSONField(blank=True, default=dict)),
                ("correlation_id", models.CharField(blank=True, max_length=200)),
                (
                    "tenant",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="orchestrator.tenant",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["-at"], name="audit_recent"),
                    models.Index(fields=["tenant", "-at"], name="audit_tenant_recent"),
                    models.Index(fields=["actor", "-at"], name="audit_actor_recent"),
                ],
            },
        ),
        migrations.RunSQL(APPEND_ONLY, DROP),
    ]
