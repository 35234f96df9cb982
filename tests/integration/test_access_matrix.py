"""The access matrix (tests/support/access_matrix.py) against the running URL map and admin.

1. Every URL pattern and every admin action has an entry, and every entry a pattern or
   an action: adding an endpoint without saying who may use it fails here.
2. Every entry's operations, by principal, answer the declared statuses; a refused
   write changes nothing; an admin action's allowed principals do change its batch.
3. No answer a member of tenant A gets (every GET, admin lists included) contains
   tenant B's ids, external ids, keys, names or slug.

One world (two tenants, an object of each kind each, a superuser, A's viewer, operator
and admin) is built once for the module inside a transaction that is rolled back at
its end; each case runs in a savepoint of it, and each principal in one of its own.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Model
from django.test import Client
from django.urls import Resolver404, include, path, resolve
from django.utils import timezone
from django_celery_results.models import TaskResult
from knox.models import AuthToken
from rest_framework.test import APIClient

from orchestrator import audit
from orchestrator.config import store
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
    PhaseRun,
    Pipeline,
    PipelineVersion,
    ProcessedEvent,
    StateTransition,
    Tenant,
    WorkLease,
)
from tests.support.access_matrix import (
    ENTRIES,
    PAST,
    PLAIN,
    ROLES,
    TENANTED,
    Check,
    Entry,
    admin_actions,
    route_of,
    url_patterns,
)
from tests.support.factories import BatchFactory, OutboxEventFactory, PipelineVersionFactory

pytestmark = [pytest.mark.integration]

ROOT_URLCONF = settings.ROOT_URLCONF
OWN, OTHER = "matrix-alpha", "matrix-beta"
PIPELINE = "matrix-pipeline"
METRICS_TOKEN = "matrix-metrics-token"


# --- 1. Every pattern and action has an entry ---------------------------------------------------


def undeclared() -> tuple[list[str], list[str], list[str]]:
    """(patterns and actions without an entry, entries without either, routes read twice)."""
    found = [route for route, _ in url_patterns()] + admin_actions()
    missing = sorted(set(found) - set(ENTRIES))
    stale = sorted(set(ENTRIES) - set(found))
    twice = sorted({route for route in found if found.count(route) > 1})
    return missing, stale, twice


def test_every_url_and_admin_action_has_an_entry() -> None:
    missing, stale, twice = undeclared()
    assert not missing, f"no entry in tests/support/access_matrix.py for: {missing}"
    assert not stale, f"entries without a URL pattern or admin action: {stale}"
    assert not twice, f"URL patterns read as the same route: {twice}"


def _new_endpoint(request: Any) -> None:
    """A view nobody declared (only routed by the URL map below)."""


# The project's URL map with one endpoint more, as a change adding it would leave it.
urlpatterns = [path("api/v1/batches/<uuid:pk>/pause/", _new_endpoint), path("", include(ROOT_URLCONF))]


def test_an_endpoint_added_without_an_entry_is_named(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__
    missing, stale, _ = undeclared()
    assert missing == ["api/v1/batches/<pk>/pause/"]
    assert stale == []


# --- The world ----------------------------------------------------------------------------------


@dataclass
class World:
    users: dict[str, Any]
    objects: dict[tuple[str, str | None], Model]  # (kind, tenant slug or None) → object
    sessions: dict[str, str]  # role → the session key of a login made with the world

    def obj(self, kind: str, side: str | None) -> Model:
        return self.objects.get((kind, side)) or self.objects[(kind, None)]


def _batch(tenant: Tenant, version: PipelineVersion, state: str, phase_state: str) -> Batch:
    batch = BatchFactory(
        tenant=tenant, pipeline_version=version, state=state, external_id=f"{tenant.slug}-{state}"
    )
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


def _task_result(batch: Batch | None) -> TaskResult:
    result = TaskResult.objects.create(
        task_id=str(uuid.uuid4()),
        task_name="tasks.phases.run_batch_phase_task",
        status="SUCCESS",
        result="null",
        date_done=timezone.now(),
    )
    if batch is not None:
        BatchTask.objects.create(task=result, batch=batch)
    return result


def flag(name: str, tenants: list[str]) -> ConfigVersion:
    value = {"enabled": True, "percent": 100, "tenants": tenants, "pipelines": [], "description": ""}
    return store.flag_set(name=name, value=value, actor="test", reason="the access matrix")


def build_world() -> World:
    now = timezone.now()
    version = PipelineVersionFactory(pipeline__name=PIPELINE)
    Pipeline.objects.filter(id=version.pipeline_id).update(active_version=version)
    objects: dict[tuple[str, str | None], Model] = {}
    User = get_user_model()
    for slug in (OWN, OTHER):
        tenant = Tenant.objects.create(slug=slug, name=f"{slug} inc")
        running = _batch(tenant, version, "running", "running")
        failed = _batch(tenant, version, "failed", "failed")
        with_errors = _batch(tenant, version, "completed_with_errors", "succeeded")
        done = _batch(tenant, version, "completed", "succeeded")
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
            batch=done, tenant=tenant, seq=0, key=f"{slug}-item", payload={"n": 1}
        )
        fingerprint = ErrorFingerprint.objects.create(
            tenant=tenant,
            fingerprint=uuid.uuid4().hex,
            error_type="ValueError",
            message=f"{slug} went wrong",
            pipeline=PIPELINE,
            phase="only",
            count=1,
            first_seen=now,
            last_seen=now,
        )
        member = User.objects.create(username=f"{slug}-member")
        AuditRecord.objects.create(
            at=now, actor=f"user:{slug}-member", action="batch.cancel", tenant=tenant, outcome="ok"
        )
        per_tenant: dict[str, Model] = {
            "tenant": tenant,
            "batch": running,
            "failed batch": failed,
            "batch with errors": with_errors,
            "completed batch": done,
            "orchestrator.Batch": running,
            "orchestrator.BatchItem": item,
            "orchestrator.ItemResult": ItemResult.objects.create(
                item=item, phase_run=phase, ok=False, error="boom"
            ),
            "orchestrator.PhaseRun": phase,
            "orchestrator.StateTransition": StateTransition.objects.create(
                batch=done, tenant=tenant, seq=1, to_state="received", actor="test", reason="matrix", at=now
            ),
            "orchestrator.BatchSnapshot": BatchSnapshot.objects.create(
                batch=done, tenant=tenant, taken_at=now, state="running", transitions_count=1, phases=[]
            ),
            "orchestrator.ChunkRun": ChunkRun.objects.create(
                phase_run=phase, start=0, end=1, started_at=now, finished_at=now
            ),
            "orchestrator.WorkLease": WorkLease.objects.create(
                phase_run=phase,
                start=0,
                end=1,
                attempt=1,
                owner="w",
                taken_at=now,
                heartbeat_at=now,
                leased_until=now,
            ),
            "orchestrator.DeferredTask": DeferredTask.objects.create(
                phase_run=phase, kind="chunk", due_at=now + timedelta(hours=1)
            ),
            "orchestrator.OutboxEvent": OutboxEventFactory(batch=done),
            "orchestrator.ProcessedEvent": ProcessedEvent.objects.create(
                event_id=str(uuid.uuid4()), event_type="batch.requested", tenant=tenant, batch=done
            ),
            "orchestrator.ErrorFingerprint": fingerprint,
            "orchestrator.ErrorCount": ErrorCount.objects.create(fingerprint=fingerprint, hour=now, count=1),
            "orchestrator.Alert": Alert.objects.create(
                tenant=tenant, kind="new_error", message=f"{slug} alert"
            ),
            "django_celery_results.TaskResult": _task_result(done),
            "orchestrator.Tenant": tenant,
            "orchestrator.Membership": Membership.objects.create(user=member, tenant=tenant, role="viewer"),
            "orchestrator.AuditRecord": audit.record(
                "batch.cancel",
                object_id=f"{slug}-audited",
                tenant=tenant,
                who=audit.Who(actor="system:matrix"),
            ),
        }
        objects.update({(kind, slug): obj for kind, obj in per_tenant.items()})
    flag("matrix-both", [OWN, OTHER])
    bystander = User.objects.create(username="matrix-bystander")
    token, _ = AuthToken.objects.create(user=bystander)
    objects.update(
        {
            ("orchestrator.Pipeline", None): version.pipeline,
            ("orchestrator.PipelineVersion", None): version,
            # Flags of both tenants and of B alone: A's members see the first, trimmed to A.
            ("orchestrator.ConfigVersion", None): flag("matrix-beta-only", [OTHER]),
            ("auth.User", None): bystander,
            ("auth.Group", None): Group.objects.create(name="matrix-group"),
            ("knox.AuthToken", None): token,
        }
    )
    # Staff, so that the admin's per-tenant rules decide (not `is_staff`); no Django permission.
    users: dict[str, Any] = {
        "superuser": User.objects.create(username="matrix-su", is_staff=True, is_superuser=True)
    }
    for role in ROLES:
        users[role] = User.objects.create(username=f"matrix-{role}", is_staff=True)
        Membership.objects.create(user=users[role], tenant=Tenant.objects.get(slug=OWN), role=role)
    sessions = {}
    for role, user in users.items():
        login = Client()
        login.force_login(user)
        sessions[role] = login.cookies[settings.SESSION_COOKIE_NAME].value
    return World(users=users, objects=objects, sessions=sessions)


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """The module's world, in a transaction rolled back after its last test."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            yield build_world()
        finally:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def matrix(world: World, db: None, settings: Any, held_batches: Any) -> World:
    """The world, in a savepoint; `/metrics` behind a token; nothing sent to a worker."""
    settings.BOS_METRICS_TOKEN = METRICS_TOKEN
    return world


# --- Requests -----------------------------------------------------------------------------------


def side_of(principal: str) -> str:
    """Whose object the principal acts on: anonymous on A's, the superuser on B's."""
    if principal.endswith(" other") or principal == "superuser":
        return OTHER
    return OWN


def side_for(check: Check, world: World, principal: str) -> str | None:
    """The tenant of the object the principal acts on (None: an object of no tenant, or none)."""
    if check.target is None or (check.target, None) in world.objects:
        return None
    return side_of(principal)


def fill(route: str, check: Check, world: World, side: str | None) -> str:
    target = world.obj(check.target, side) if check.target else None
    values = {
        "format": "json",
        "key": "chunk_size",
        "app_label": "orchestrator",
        "url": "no-such-page/",
        "version": "1",
    }
    if route.startswith("api/v1/pipelines/"):
        values["name"] = PIPELINE
    elif route.startswith("api/v1/flags/"):
        values["name"] = "matrix_flag"
    if target is not None:
        values.update(
            pk=str(target.pk), batch_id=str(target.pk), id=str(target.pk), object_id=str(quote(target.pk))
        )
        values["content_type_id"] = str(ContentType.objects.get_for_model(target).pk)
    path = route
    for name, value in values.items():
        path = path.replace(f"<{name}>", value)
    assert "<" not in path, f"no value for a part of {route}"
    return "/" + path


def client_for(route: str, world: World, principal: str) -> Any:
    role = principal.split()[0]
    user = world.users.get(role)
    if route.startswith("api/v1/"):
        api = APIClient(raise_request_exception=False)
        if user is not None:
            api.force_authenticate(user)
        return api
    web = Client(raise_request_exception=False)
    if user is not None:
        # The world's login (a fresh client each time: no cookie of an earlier answer).
        web.cookies[settings.SESSION_COOKIE_NAME] = world.sessions[role]
    return web


def body_of(entry: Entry, check: Check, world: World, side: str | None) -> dict[str, Any]:
    if entry.key.startswith("action "):
        name = entry.key.split(":", 1)[1]
        target = world.obj(check.target or "", side)
        return {"action": name, helpers.ACTION_CHECKBOX_NAME: [str(target.pk)], "index": "0", "post": "yes"}
    if check.target == "tenant":  # a batch submitted in the case's tenant
        return {
            "tenant": side,
            "external_id": f"matrix-new-{uuid.uuid4().hex[:8]}",
            "pipeline": PIPELINE,
            "items": [{"key": "k", "payload": {"text": "x"}}],
        }
    return dict(check.body or {})


def route_of_entry(entry: Entry, check: Check) -> str:
    if entry.key.startswith("action "):
        label = entry.key.removeprefix("action ").split(":")[0]
        app, model = label.split(".")
        return f"admin/{app}/{model.lower()}/"
    return entry.key


def request(entry: Entry, check: Check, world: World, principal: str) -> Any:
    side = side_for(check, world, principal)
    route = route_of_entry(entry, check)
    path = fill(route, check, world, side) + (f"?{check.query}" if check.query else "")
    client = client_for(route, world, principal)
    method = getattr(client, check.method.lower())
    if check.method == "GET":
        return method(path)
    body = body_of(entry, check, world, side)
    if route.startswith("api/v1/"):
        return method(path, body, format="json")
    return method(path, body)


def state(check: Check, world: World, principal: str) -> Any:
    """What a refused write must leave as it was: the watched table, or the target's row."""
    if check.watch:
        rows = apps.get_model(check.watch)._default_manager.all()
        # The audit log records each refusal itself (a `denied` row): that is not an added row.
        return (rows.exclude(outcome="denied") if check.watch == "orchestrator.AuditRecord" else rows).count()
    if check.target is None:
        return None
    obj = world.obj(check.target, side_for(check, world, principal))
    return list(type(obj)._default_manager.filter(pk=obj.pk).values())


# --- 2. The matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    entry: Entry
    check: Check
    principals: tuple[str, ...]
    expected: frozenset[int]

    @property
    def name(self) -> str:
        method = "" if self.entry.key.startswith("action ") else f"{self.check.method} "
        changes = " changes" if set(self.principals) <= self.check.changes else ""
        statuses = "|".join(str(s) for s in sorted(self.expected))
        return f"{method}{self.entry.key} {','.join(self.principals)} -> {statuses}{changes}"


def cases() -> Iterator[Any]:
    """One case per entry, operation and group of principals answering alike (those of a
    suspected bug: a case of their own, a strict xfail)."""
    for entry in ENTRIES.values():
        for check in entry.checks:
            groups: dict[Any, list[str]] = defaultdict(list)
            for principal in TENANTED if set(check.expect) == set(TENANTED) else PLAIN:
                key = (check.expect[principal], principal in check.changes, check.suspect.get(principal))
                groups[key].append(principal)
            for (expected, _, reason), principals in groups.items():
                case = Case(entry, check, tuple(principals), expected)
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(case, id=case.name, marks=marks)


CASES = list(cases())


@pytest.mark.parametrize("case", CASES)
def test_access_matrix(case: Case, matrix: World) -> None:
    check = case.check
    for principal in case.principals:
        with transaction.atomic():
            before = state(check, matrix, principal) if check.writes else None
            response = request(case.entry, check, matrix, principal)
            assert response.status_code in case.expected, (
                f"{principal}: {response.status_code} not in {sorted(case.expected)}: {response.content[:300]!r}"
            )
            if check.writes:
                after = state(check, matrix, principal)
                if principal in check.changes:
                    assert after != before, f"{principal}: nothing changed"
                elif case.expected != PAST:
                    assert after == before, f"{principal}: a refused write changed something"
            transaction.set_rollback(True)


# --- 3. No leaks --------------------------------------------------------------------------------


def markers_of_other_tenant(world: World) -> set[str]:
    """What of tenant B must never reach a member of A: its slug (in every name made
    here), its objects' ids and external ids."""
    found = {OTHER}
    for (kind, side), obj in world.objects.items():
        if side == OTHER and kind.startswith(("orchestrator.", "django_celery_results.")):
            found.update(
                str(getattr(obj, name))
                for name in ("pk", "event_id", "fingerprint", "task_id")
                if hasattr(obj, name)
            )
    for batch in Batch.objects.filter(tenant__slug=OTHER):
        found.update({str(batch.id), batch.external_id})
    # Small integer ids would match any number on a page: only ids that say something.
    return {m for m in found if len(m) >= 8}


def test_no_response_leaks_another_tenants_data(matrix: World) -> None:
    """Every GET of the matrix as A's viewer, operator and admin (on A's objects): no
    answer, whatever its status, names anything of B in its body or its Location."""
    markers = markers_of_other_tenant(matrix)
    answers, ok, leaks, started = 0, 0, [], time.monotonic()
    for entry in ENTRIES.values():
        for check in (c for c in entry.checks if c.method == "GET"):
            for role in ROLES:
                principal = f"{role} own" if f"{role} own" in check.expect else role
                with transaction.atomic():
                    response = request(entry, check, matrix, principal)
                    transaction.set_rollback(True)
                text = response.content.decode(errors="replace") + response.get("Location", "")
                answers += 1
                ok += response.status_code == 200
                leaks += [f"{entry.key} as {role}: {m}" for m in sorted(markers) if m in text]
    print(
        f"\naccess matrix, leaks: {answers} answers ({ok} of them 200) x {len(markers)} markers "
        f"of tenant B: {len(leaks)} leaks, {time.monotonic() - started:.1f} s"
    )
    assert ok > 200, "too few pages were shown to check them for leaks"
    assert not leaks, "\n".join(leaks)
    # The controls: A's members do get what is shared with B, trimmed to A ...
    flags_entry = ENTRIES["api/v1/flags/"]
    flags = request(flags_entry, flags_entry.checks[0], matrix, "viewer").json()["results"]
    assert [(f["name"], f["tenants"]) for f in flags if f["name"].startswith("matrix")] == [
        ("matrix-both", [OWN])
    ]
    # ... and where B's objects may be shown, the markers do find them.
    batches = ENTRIES["admin/orchestrator/batch/"].checks[0]
    shown = request(ENTRIES["admin/orchestrator/batch/"], batches, matrix, "superuser").content.decode()
    assert {m for m in markers if m in shown} >= {
        OTHER,
        f"{OTHER}-running",
        str(matrix.obj("batch", OTHER).pk),
    }


def test_every_declared_route_resolves(matrix: World) -> None:
    """The matrix's own URLs reach the patterns they are entries for (not a neighbour)."""
    for entry in ENTRIES.values():
        for check in entry.checks:
            route = route_of_entry(entry, check)
            path = fill(route, check, matrix, side_for(check, matrix, "admin own"))
            try:
                match = resolve(path)
            except Resolver404:
                pytest.fail(f"{path} ({entry.key}) resolves to nothing")
            assert route_of(match.route) == route, f"{path} reaches {route_of(match.route)}, not {route}"
