"""The admin by tenant and role: a matrix over every registered ModelAdmin.

Users of tenant `acme` (viewer, operator, admin), a superuser and a staff user with no
membership, each holding every Django permission of the orchestrator app (which must
grant nothing by itself), go through every page and action of every registered
ModelAdmin, on `acme`'s objects (own), `globex`'s (other) and objects of no tenant.
Another tenant's object is never listed, never shown, never changed; the name `globex`
never appears on a page an `acme` member sees.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework.test import APIClient

from orchestrator import access, audit
from orchestrator.access import Do
from orchestrator.models import (
    Alert,
    AuditRecord,
    Batch,
    BatchItem,
    BatchSnapshot,
    BatchTask,
    ChunkRun,
    ConfigVersion,
    DeferredTask,
    ErrorCount,
    ErrorFingerprint,
    ItemResult,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    ProcessedEvent,
    StateTransition,
    Tenant,
    WorkLease,
)
from orchestrator.services.users import api_user_grant
from tests.support.factories import BatchFactory, OutboxEventFactory, PipelineVersionFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

OWN, OTHER, NONE = "acme", "globex", None
ROLES = {"viewer": 1, "operator": 2, "admin": 3}
KINDS = ["viewer", "operator", "admin", "superuser", "staff"]
BATCH_ACTIONS = {
    "cancel_batches": "running",
    "retry_batches": "failed",
    "retry_failed_items": "completed_with_errors",
    "rollback_batches": "completed",
}


@dataclass(frozen=True)
class Spec:
    """What the admin of a model must allow, written here independently of the code.

    `read`/`change`: the least role that reads / changes a tenant's row (None: no role
    does); `members_read`: rows of no tenant that every member reads (pipelines).
    A superuser reads everything; `su_*`: what else a superuser may do.
    """

    read: int | None = 1
    change: int | None = None
    members_read: bool = False
    su_change: bool = False
    su_add: bool = False
    su_delete: bool = False


RECORD = Spec()
PLATFORM = Spec(read=None, members_read=True)
DJANGO_OWN = Spec(read=None, su_change=True, su_add=True, su_delete=True)
SPECS: dict[type[Model], Spec] = {
    Batch: RECORD,
    BatchItem: RECORD,
    ItemResult: RECORD,
    PhaseRun: RECORD,
    StateTransition: RECORD,
    BatchSnapshot: RECORD,
    ChunkRun: RECORD,
    WorkLease: RECORD,
    DeferredTask: RECORD,
    OutboxEvent: RECORD,
    ProcessedEvent: RECORD,
    ErrorFingerprint: RECORD,
    ErrorCount: RECORD,
    Alert: RECORD,
    TaskResult: RECORD,  # a batch's task results by tenant; tasks of no batch: superusers
    Tenant: Spec(read=1, change=3, su_change=True, su_add=True),
    Membership: Spec(read=3, su_change=True, su_add=True, su_delete=True),
    Pipeline: PLATFORM,
    PipelineVersion: PLATFORM,
    ConfigVersion: Spec(read=None, su_add=True),  # the platform's runtime settings
    AuditRecord: Spec(read=3),  # a tenant's admins read its records; nobody changes one
    get_user_model(): DJANGO_OWN,
    Group: DJANGO_OWN,
    AuthToken: DJANGO_OWN,
}


def may_read(spec: Spec, kind: str, owner: str | None) -> bool:
    if kind == "superuser":
        return True
    if kind == "staff":
        return False
    if owner is None:
        return spec.members_read
    return owner == OWN and spec.read is not None and ROLES[kind] >= spec.read


def may_change(spec: Spec, kind: str, owner: str | None) -> bool:
    if kind == "superuser":
        return spec.su_change
    return owner == OWN and kind in ROLES and spec.change is not None and ROLES[kind] >= spec.change


# --- The world ---------------------------------------------------------------------------------


def _batch(tenant: Tenant, version: PipelineVersion, state: str, phase_state: str) -> Batch:
    batch = BatchFactory(tenant=tenant, pipeline_version=version, state=state)
    PhaseRun.objects.create(
        batch=batch,
        tenant=tenant,
        name="only",
        handler="test.count",
        mode="per_batch",
        position=0,
        state=phase_state,
    )
    return batch


def _task_result(name: str, batch: Batch | None) -> TaskResult:
    """A stored task result, as the result backend writes it (linked when about a batch)."""
    result = TaskResult.objects.create(
        task_id=str(uuid.uuid4()), task_name=name, status="SUCCESS", result="null", date_done=timezone.now()
    )
    if batch is not None:
        BatchTask.objects.create(task=result, batch=batch)
    return result


def build_world(
    tag: str = "",
) -> tuple[dict[type[Model], dict[str | None, Model]], dict[str, dict[str, Batch]]]:
    """Objects of every registered model for `acme`, `globex` and no tenant; and, per
    tenant, a batch in a state that each batch action accepts. Built again with
    another `tag`, the same tenants get as many rows again."""
    now = timezone.now()
    version = PipelineVersionFactory(pipeline__name=f"admin-matrix{tag}")
    Pipeline.objects.filter(id=version.pipeline_id).update(active_version=version)
    objects: dict[type[Model], dict[str | None, Model]] = {model: {} for model in SPECS}
    targets: dict[str, dict[str, Batch]] = {}
    for slug in (OWN, OTHER):
        tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": f"{slug} inc"})
        running = _batch(tenant, version, "running", "running")
        failed = _batch(tenant, version, "failed", "failed")
        with_errors = _batch(tenant, version, "completed_with_errors", "succeeded")
        done = _batch(tenant, version, "completed", "succeeded")
        targets[slug] = {
            "cancel_batches": running,
            "retry_batches": failed,
            "retry_failed_items": with_errors,
            "rollback_batches": done,
        }
        BatchItem.objects.create(
            batch=with_errors,
            tenant=tenant,
            seq=0,
            key=f"{slug}-bad",
            payload={},
            state="failed",
            failed_phase="only",
        )
        Batch.objects.filter(id=done.id).update(transitions_count=1)
        phase = done.phases.get()
        item = BatchItem.objects.create(
            batch=done, tenant=tenant, seq=0, key=f"{slug}-item", payload={"secret": 1}
        )
        fingerprint = ErrorFingerprint.objects.create(
            tenant=tenant,
            fingerprint=uuid.uuid4().hex,
            error_type="ValueError",
            message=f"{slug} went wrong",
            pipeline="admin-matrix",
            phase="only",
            count=1,
            first_seen=now,
            last_seen=now,
        )
        member = get_user_model().objects.create(username=f"{slug}-member{tag}")
        objects[Batch][slug] = running
        objects[BatchItem][slug] = item
        objects[ItemResult][slug] = ItemResult.objects.create(
            item=item, phase_run=phase, ok=False, error="boom"
        )
        objects[PhaseRun][slug] = phase
        objects[StateTransition][slug] = StateTransition.objects.create(
            batch=done,
            tenant=tenant,
            seq=1,
            to_state="received",
            actor="test",
            reason="made by the matrix",
            at=now,
        )
        objects[BatchSnapshot][slug] = BatchSnapshot.objects.create(
            batch=done, tenant=tenant, taken_at=now, state="running", transitions_count=1, phases=[]
        )
        objects[ChunkRun][slug] = ChunkRun.objects.create(
            phase_run=phase, start=0, end=1, started_at=now, finished_at=now
        )
        objects[WorkLease][slug] = WorkLease.objects.create(
            phase_run=phase,
            start=0,
            end=1,
            attempt=1,
            owner="w",
            taken_at=now,
            heartbeat_at=now,
            leased_until=now,
        )
        objects[DeferredTask][slug] = DeferredTask.objects.create(
            phase_run=phase, kind="chunk", due_at=now + timedelta(hours=1)
        )
        objects[OutboxEvent][slug] = OutboxEventFactory(batch=done)
        objects[ProcessedEvent][slug] = ProcessedEvent.objects.create(
            event_id=str(uuid.uuid4()), event_type="batch.requested", tenant=tenant, batch=done
        )
        objects[ErrorFingerprint][slug] = fingerprint
        objects[ErrorCount][slug] = ErrorCount.objects.create(fingerprint=fingerprint, hour=now, count=1)
        objects[Alert][slug] = Alert.objects.create(tenant=tenant, kind="new_error", message=f"{slug} alert")
        objects[TaskResult][slug] = _task_result(f"tasks.phases.run_batch_phase_task{tag}", batch=done)
        objects[Tenant][slug] = tenant
        objects[Membership][slug] = Membership.objects.create(user=member, tenant=tenant, role="viewer")
        objects[AuditRecord][slug] = audit.record(
            "batch.cancel", object_id=f"{slug}-audited", tenant=tenant, who=audit.Who(actor="system:matrix")
        )
    bystander = get_user_model().objects.create(username=f"bystander{tag}")
    (bystander_token, _) = AuthToken.objects.create(user=bystander)
    objects[Alert][NONE] = Alert.objects.create(tenant=None, kind="consumer_lag", message="the service lags")
    objects[AuditRecord][NONE] = audit.record("login_failed", who=audit.Who(actor="anonymous"))
    objects[TaskResult][NONE] = _task_result(f"tasks.maintenance.reconcile_task{tag}", batch=None)
    objects[Pipeline][NONE] = version.pipeline
    objects[PipelineVersion][NONE] = version
    objects[ConfigVersion][NONE] = ConfigVersion.objects.create(
        version=ConfigVersion.objects.count() + 1,
        actor="test",
        reason="made by the matrix",
        changes={},
        values={},
    )
    objects[get_user_model()][NONE] = bystander
    objects[Group][NONE] = Group.objects.create(name=f"some-group{tag}")
    objects[AuthToken][NONE] = bystander_token
    return objects, targets


def login(kind: str) -> Client:
    """A staff user of `kind`, holding every Django permission of the orchestrator app."""
    user = get_user_model().objects.create(
        username=f"the-{kind}", is_staff=True, is_superuser=kind == "superuser"
    )
    if kind != "superuser":
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="orchestrator"))
    if kind in ROLES:
        Membership.objects.create(user=user, tenant=Tenant.objects.get(slug=OWN), role=kind)
    client = Client()
    client.force_login(user)
    return client


def url(model: type[Model], view: str, obj: Model | None = None) -> str:
    opts = model._meta
    args = [quote(obj.pk)] if obj is not None else []
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def state_of(obj: Model) -> list[dict[str, Any]]:
    # By the primary key field's own value (AuthToken's is its digest).
    key = obj._meta.pk.value_from_object(obj)
    return list(type(obj)._default_manager.filter(pk=key).values())


def label(model: type[Model]) -> str:
    return model._meta.label


REGISTERED = sorted(admin.site._registry, key=label)


# --- The matrix --------------------------------------------------------------------------------


def test_every_registered_model_admin_is_in_the_matrix() -> None:
    assert set(REGISTERED) == set(SPECS)


class Pages:
    """Requests of one user; every answer an `acme` member gets is checked for `globex`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.client = login(kind)

    def _checked(self, response: Any) -> Any:
        assert response.status_code < 500, response.content[:2000]
        if self.kind != "superuser" and response.status_code == 200:
            assert b"globex" not in response.content.lower(), f"{self.kind} was shown globex"
        return response

    def get(self, path: str) -> Any:
        return self._checked(self.client.get(path))

    def post(self, path: str, data: dict[str, Any]) -> Any:
        return self._checked(self.client.post(path, data))


HIDDEN = (302, 403, 404)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", REGISTERED, ids=label)
def test_admin_pages_and_actions_by_tenant_and_role(model: type[Model], kind: str) -> None:
    objects, targets = build_world()
    spec = SPECS[model]
    model_admin = admin.site._registry[model]
    pages = Pages(kind)
    rows = objects[model]
    readable_rows = {owner for owner in rows if may_read(spec, kind, owner)}

    listed = pages.get(url(model, "changelist"))
    if readable_rows:
        assert listed.status_code == 200
        shown = {obj.pk for obj in listed.context["cl"].result_list}
        for owner, obj in rows.items():
            assert (obj.pk in shown) == (owner in readable_rows), (owner, obj)
        form = listed.context.get("action_form")
        offered = {name for name, _ in form.fields["action"].choices if name} if form else set()
        operates = kind == "superuser" or ROLES.get(kind, 0) >= ROLES["operator"]
        expected = set(BATCH_ACTIONS) if model is Batch and operates else set()
        if kind == "superuser" and spec.su_delete:
            expected.add("delete_selected")
        if model._meta.app_label == "orchestrator":  # Django's and DRF's admins offer what they do
            assert offered == expected
    else:
        assert listed.status_code in HIDDEN

    for owner, obj in rows.items():
        before = state_of(obj)
        for view in ("change", "history"):
            page = pages.get(url(model, view, obj))
            assert (page.status_code == 200) == (owner in readable_rows), (view, owner, page.status_code)
        if model is Batch and owner in readable_rows:
            # Its inlines are shown with it: phases, and the history (a transition of `done`).
            done = targets[owner]["rollback_batches"]
            assert b"made by the matrix" in pages.get(url(model, "change", done)).content
        if not may_change(spec, kind, owner):
            # A forged save of the change form.
            assert pages.post(url(model, "change", obj), {}).status_code in (*HIDDEN, 200)
            assert state_of(obj) == before, f"{kind} changed {owner}'s {label(model)}"
        deleting = pages.get(url(model, "delete", obj))
        may_delete = kind == "superuser" and spec.su_delete
        assert (deleting.status_code == 200) == may_delete, (owner, deleting.status_code)
        if not may_delete:
            pages.post(url(model, "delete", obj), {"post": "yes"})
            assert state_of(obj) == before, f"{kind} deleted {owner}'s {label(model)}"

    may_add = kind == "superuser" and spec.su_add
    # The audit log records each refused page (a `denied` row): those are not added rows.
    added = (
        model._default_manager.exclude(outcome="denied") if model is AuditRecord else model._default_manager
    )
    count = added.count()
    assert (pages.get(url(model, "add")).status_code == 200) == may_add
    # An empty Add form: refused, or a form with its errors; never a 500, never a row.
    assert pages.post(url(model, "add"), {}).status_code in ((200,) if may_add else (403,))
    assert added.count() == count

    for _, action, _ in model_admin._get_base_actions():
        for owner, obj in rows.items():
            target = targets[owner].get(action, obj) if model is Batch and owner in targets else obj
            before = state_of(target)
            response = pages.post(
                url(model, "changelist"),
                {
                    "action": action,
                    helpers.ACTION_CHECKBOX_NAME: [str(target.pk)],
                    "index": "0",
                    "post": "yes",
                },
            )
            assert response.status_code in (*HIDDEN, 200)
            if action == "delete_selected":
                allowed = kind == "superuser" and spec.su_delete
            else:
                allowed = kind == "superuser" or (owner == OWN and ROLES.get(kind, 0) >= ROLES["operator"])
            changed = state_of(target) != before
            assert changed == allowed or (allowed and model._meta.app_label != "orchestrator"), (
                action,
                owner,
            )


# --- One by one --------------------------------------------------------------------------------


def test_a_viewer_of_another_tenant_cannot_roll_back_a_batch_from_the_admin() -> None:
    """The reported case: staff with view permission, member of `globex`, against `acme`."""
    _, targets = build_world()
    intruder = get_user_model().objects.create(username="intruder", is_staff=True)
    intruder.user_permissions.set(Permission.objects.filter(codename__in=["view_batch", "change_batch"]))
    Membership.objects.create(user=intruder, tenant=Tenant.objects.get(slug=OTHER), role="operator")
    client = Client()
    client.force_login(intruder)
    batch = targets[OWN]["rollback_batches"]
    response = client.post(
        reverse("admin:orchestrator_batch_changelist"),
        {"action": "rollback_batches", helpers.ACTION_CHECKBOX_NAME: [str(batch.pk)], "index": "0"},
        follow=True,
    )
    assert "not yours to operate on" in response.content.decode()
    batch.refresh_from_db()
    assert batch.state == "completed" and not batch.transitions.filter(seq__gt=1).exists()


def test_an_operator_of_one_tenant_and_viewer_of_another_operates_on_the_first_only() -> None:
    _, targets = build_world()
    user = get_user_model().objects.create(username="mixed", is_staff=True)
    Membership.objects.create(user=user, tenant=Tenant.objects.get(slug=OWN), role="operator")
    Membership.objects.create(user=user, tenant=Tenant.objects.get(slug=OTHER), role="viewer")
    client = Client()
    client.force_login(user)
    mine, theirs = targets[OWN]["cancel_batches"], targets[OTHER]["cancel_batches"]
    changelist = reverse("admin:orchestrator_batch_changelist")
    # Both are listed (the user reads both tenants), but one action over both is refused whole.
    both = {
        "action": "cancel_batches",
        helpers.ACTION_CHECKBOX_NAME: [str(mine.pk), str(theirs.pk)],
        "index": "0",
    }
    client.post(changelist, both)
    assert Batch.objects.filter(id__in=[mine.id, theirs.id], state="running").count() == 2
    client.post(changelist, {**both, helpers.ACTION_CHECKBOX_NAME: [str(mine.pk)]})
    assert Batch.objects.get(id=mine.id).state == "cancelled"
    assert Batch.objects.get(id=mine.id).transitions.get().actor == "user:mixed"


def test_a_tenant_admin_renames_their_tenant_but_not_its_slug() -> None:
    build_world()
    client = login("admin")
    acme = Tenant.objects.get(slug=OWN)
    response = client.post(url(Tenant, "change", acme), {"name": "Acme Corp", "slug": "hijacked"})
    assert response.status_code == 302
    acme.refresh_from_db()
    assert (acme.slug, acme.name) == (OWN, "Acme Corp")


def test_the_breakers_page_is_for_superusers() -> None:
    Tenant.objects.create(slug=OWN)
    assert login("admin").get("/admin/bos/breakers/").status_code == 403
    page = login("superuser").get("/admin/bos/breakers/")
    assert page.status_code == 200 and b"Circuit breakers" in page.content


# --- Query counts ------------------------------------------------------------------------------


def _running_batches(tenant: Tenant, version: PipelineVersion, n: int) -> None:
    for _ in range(n):
        batch = BatchFactory(tenant=tenant, pipeline_version=version, state="running")
        for position, name in enumerate(["first", "second"]):
            PhaseRun.objects.create(
                batch=batch,
                tenant=tenant,
                name=name,
                handler="test.count",
                mode="per_batch",
                position=position,
                state="running",
            )


@pytest.mark.parametrize("kind", ["operator", "superuser"])
def test_the_batch_changelist_makes_as_many_queries_for_50_rows_as_for_5(
    kind: str, django_assert_num_queries: Any
) -> None:
    tenant = Tenant.objects.create(slug=OWN)
    version = PipelineVersionFactory()
    client = login(kind)
    changelist = reverse("admin:orchestrator_batch_changelist")
    _running_batches(tenant, version, 5)
    client.get(changelist)  # caches warmed, as for any later page
    with CaptureQueriesContext(connection) as five:
        page = client.get(changelist)
    assert len(page.context["cl"].result_list) == 5
    assert b"first, second" in page.content
    _running_batches(tenant, version, 45)
    with django_assert_num_queries(len(five.captured_queries)):
        page = client.get(changelist)
    assert len(page.context["cl"].result_list) == 50


@pytest.mark.parametrize("kind", ["admin", "superuser"])
@pytest.mark.parametrize("model", REGISTERED, ids=label)
def test_every_changelist_makes_as_many_queries_for_twice_the_rows(model: type[Model], kind: str) -> None:
    build_world()
    client = login(kind)
    changelist = url(model, "changelist")
    client.get(changelist)

    def queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            page = client.get(changelist)
        rows = len(page.context["cl"].result_list) if page.status_code == 200 else 0
        return rows, len(captured.captured_queries)

    rows, count = queries()
    build_world(tag="-2")
    more_rows, more_count = queries()
    assert more_count == count, f"{rows} rows: {count} queries; {more_rows} rows: {more_count}"
    if rows and model is not Tenant:
        assert more_rows > rows


# --- Statistics are per tenant -----------------------------------------------------------------


def test_pipeline_version_statistics_count_only_the_readers_tenants_batches() -> None:
    version = PipelineVersionFactory(pipeline__name="counted")
    for slug, n in ((OWN, 2), (OTHER, 5)):
        tenant = Tenant.objects.create(slug=slug)
        for _ in range(n):
            BatchFactory(tenant=tenant, pipeline_version=version, state="completed")

    token = api_user_grant(username="reader", tenant=OWN, role="viewer")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    (row,) = api.get("/api/v1/pipelines/counted/versions/").json()["results"]
    assert row["stats"]["counts"] == {"completed": 2} and row["stats"]["total"] == 2

    page = login("viewer").get(url(Pipeline, "change", version.pipeline)).content.decode()
    assert "completed 2" in page and "completed 5" not in page and "completed 7" not in page
    assert "completed 7" in login("superuser").get(url(Pipeline, "change", version.pipeline)).content.decode()


# --- create_api_user --password ----------------------------------------------------------------


def test_create_api_user_with_a_password_may_log_in_to_the_admin_and_sees_its_tenant_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    build_world()
    call_command(
        "create_api_user", "carol", "--tenant", OWN, "--role", "operator", "--password", "s3cret-pass"
    )
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert AuthToken.objects.filter(user__username="carol", digest=hash_token(token)).exists()
    client = Client()
    assert client.login(username="carol", password="s3cret-pass")
    listed = client.get(reverse("admin:orchestrator_batch_changelist"))
    assert listed.status_code == 200
    assert {b.tenant.slug for b in listed.context["cl"].result_list} == {OWN}
    actions = [name for name, _ in listed.context["action_form"].fields["action"].choices]
    assert {"cancel_batches", "rollback_batches"} <= set(actions) and "delete_selected" not in actions

    # A second tenant adds a membership and a new token; the first one still works, the same login.
    call_command("create_api_user", "carol", "--tenant", "initech", "--role", "viewer")
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != token
    assert set(AuthToken.objects.filter(user__username="carol").values_list("digest", flat=True)) == {
        hash_token(token),
        hash_token(second),
    }
    assert set(Membership.objects.filter(user__username="carol").values_list("tenant__slug", "role")) == {
        (OWN, "operator"),
        ("initech", "viewer"),
    }
    assert client.login(username="carol", password="s3cret-pass")


def test_create_api_user_without_a_password_gives_no_admin_login(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("create_api_user", "dave", "--tenant", OWN, "--role", "admin")
    dave = get_user_model().objects.get(username="dave")
    assert not dave.is_staff and not dave.has_usable_password()
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert AuthToken.objects.get(user=dave).digest == hash_token(printed)


# --- orchestrator.access -----------------------------------------------------------------------


def test_roles_are_ordered_and_held_per_tenant() -> None:
    acme, globex = Tenant.objects.create(slug=OWN), Tenant.objects.create(slug=OTHER)
    user = get_user_model().objects.create(username="two-hats")
    Membership.objects.create(user=user, tenant=acme, role="viewer")
    Membership.objects.create(user=user, tenant=globex, role="admin")
    assert access.tenant_ids(user, Do.READ) == sorted([acme.id, globex.id])
    assert access.tenant_ids(user, Do.OPERATE) == access.tenant_ids(user, Do.ADMINISTER) == [globex.id]
    assert access.may(user, Do.READ, acme.id) and not access.may(user, Do.OPERATE, acme.id)
    assert not access.may(user, Do.READ, None)  # what belongs to no tenant
    root = get_user_model().objects.create(username="root", is_superuser=True)
    assert access.tenant_ids(root) is None and access.may(root, Do.ADMINISTER, None)
    nobody = get_user_model().objects.create(username="nobody", is_staff=True)
    assert access.tenant_ids(nobody) == [] and not access.may_somewhere(nobody, Do.READ)
