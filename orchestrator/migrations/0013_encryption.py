"""Encryption at rest (docs/encryption.md): payloads, results, metadata, reports and phase
outputs become `text` columns holding Fernet tokens, nullable (a retention purge nulls them).

Going forward only changes the column type: the rows already there keep their JSON as plain
text, which reads back as it is (orchestrator.payloads tells the two apart), until
`manage.py bos_rotate_keys --execute` encrypts them. Going back first decrypts every token
into plain JSON text, so the columns can be jsonb again.
"""

import json

from django.db import migrations

import orchestrator.encrypted_fields

COLUMNS = [
    ("orchestrator_batch", "metadata"),
    ("orchestrator_batch", "report"),
    ("orchestrator_batchitem", "payload"),
    ("orchestrator_itemresult", "output"),
    ("orchestrator_phaserun", "output"),
]


def decrypt_all(apps, schema_editor):
    """Every token back to plain JSON text (the reverse of this migration needs that)."""
    from orchestrator import payloads

    with schema_editor.connection.cursor() as cursor:
        # Foreign keys checked at once, so no trigger event is pending at the ALTER TABLEs after.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table, column in COLUMNS:
            last = None
            while True:
                # Keyset pages over the primary key: one round trip per 1,000 rows.
                cursor.execute(
                    f"SELECT id::text, {column} FROM {table} WHERE {column} LIKE %s"  # noqa: S608
                    + (" AND id::text > %s" if last is not None else "")
                    + " ORDER BY id::text LIMIT 1000",
                    [payloads.FERNET_START + "%", *([last] if last is not None else [])],
                )
                rows = cursor.fetchall()
                for row_id, stored in rows:
                    clear = json.dumps(payloads.decrypt(stored))
                    cursor.execute(
                        f"UPDATE {table} SET {column} = %s WHERE id::text = %s",  # noqa: S608
                        [clear, row_id],
                    )
                if len(rows) < 1000:
                    break
                last = rows[-1][0]
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0012_retention"),
    ]

    operations = [
        migrations.AlterField(
            model_name="batch",
            name="metadata",
            field=orchestrator.encrypted_fields.EncryptedJSONField(blank=True, default=dict, null=True),
        ),
        migrations.AlterField(
            model_name="batch",
            name="report",
            field=orchestrator.encrypted_fields.EncryptedJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="batchitem",
            name="payload",
            field=orchestrator.encrypted_fields.EncryptedJSONField(null=True),
        ),
        migrations.AlterField(
            model_name="itemresult",
            name="output",
            field=orchestrator.encrypted_fields.EncryptedJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="phaserun",
            name="output",
            field=orchestrator.encrypted_fields.EncryptedJSONField(blank=True, null=True),
        ),
        # Forward: nothing. Backward (run first when going back): tokens to plain JSON.
        migrations.RunPython(migrations.RunPython.noop, decrypt_all),
    ]
