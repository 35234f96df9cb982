"""The audit log's records: written with who and where, append-only in the ORM and the database."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.test import Client

from orchestrator import audit
from orchestrator.models import AppendOnly, AuditRecord
from tests.support.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_record_takes_who_and_where_from_the_acting_context() -> None:
    tenant = TenantFactory()
    with audit.acting_as(audit.Who(actor="user:ann", ip="198.51.100.7", correlation_id="c-1")):
        row = audit.record("batch.cancel", object_type="batch", object_id="b-1", tenant=tenant)
    stored = AuditRecord.objects.get(pk=row.pk)
    assert (
        stored.actor,
        stored.ip,
        stored.action,
        stored.tenant_id,
        stored.outcome,
        stored.correlation_id,
    ) == (
        "user:ann",
        "198.51.100.7",
        "batch.cancel",
        tenant.pk,
        "ok",
        "c-1",
    )


def test_the_orm_refuses_to_change_or_delete_a_record() -> None:
    row = audit.record("login", who=audit.Who(actor="user:ann"))
    row.outcome = "denied"
    with pytest.raises(AppendOnly):
        row.save()
    with pytest.raises(AppendOnly):
        row.delete()
    with pytest.raises(AppendOnly):
        AuditRecord.objects.filter(pk=row.pk).update(outcome="denied")
    with pytest.raises(AppendOnly):
        AuditRecord.objects.filter(pk=row.pk).delete()


def test_the_database_refuses_update_and_delete_on_the_audit_table() -> None:
    row = audit.record("login", who=audit.Who(actor="user:ann"))
    for statement in (
        "UPDATE orchestrator_auditrecord SET outcome = 'denied' WHERE id = %s",
        "DELETE FROM orchestrator_auditrecord WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [row.pk])
    assert AuditRecord.objects.get(pk=row.pk).outcome == "ok"


def test_only_a_transaction_that_declares_the_purge_may_delete() -> None:
    row = audit.record("login", who=audit.Who(actor="user:ann"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL bos.audit_purge = 'on'")
        cursor.execute("DELETE FROM orchestrator_auditrecord WHERE id = %s", [row.pk])
    assert not AuditRecord.objects.filter(pk=row.pk).exists()


def test_the_admin_shows_a_tenant_admin_their_tenants_records_read_only() -> None:
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    mine = audit.record("batch.cancel", object_id="ours", tenant=acme, who=audit.Who(actor="user:x"))
    audit.record("batch.cancel", object_id="theirs", tenant=globex, who=audit.Who(actor="user:y"))
    audit.record("login_failed", object_id="nobodys", who=audit.Who(actor="anonymous"))
    ada = UserFactory(username="ada", is_staff=True)
    MembershipFactory(user=ada, tenant=acme, role="admin")
    vic = UserFactory(username="vic", is_staff=True)
    MembershipFactory(user=vic, tenant=acme, role="operator")
    admin, operator = Client(), Client()
    admin.force_login(ada)
    operator.force_login(vic)

    page = admin.get("/admin/orchestrator/auditrecord/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "ours" in text and "theirs" not in text and "nobodys" not in text
    assert operator.get("/admin/orchestrator/auditrecord/").status_code == 403
    assert admin.get(f"/admin/orchestrator/auditrecord/{mine.pk}/change/").status_code == 200
    assert admin.get(f"/admin/orchestrator/auditrecord/{mine.pk}/delete/").status_code == 403
    assert (
        admin.post(f"/admin/orchestrator/auditrecord/{mine.pk}/change/", {"actor": "forged"}).status_code
        == 403
    )
    assert AuditRecord.objects.get(pk=mine.pk).actor == "user:x"
