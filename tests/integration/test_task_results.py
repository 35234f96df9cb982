"""Task results people can find: per-batch, maintenance and analytics tasks store their
extended results in PostgreSQL (django-celery-results' TaskResult), linked to their
batch; chunk tasks and chord callbacks keep theirs in Redis. The admin shows a tenant's
members only their batches' task results, and platform tasks to superusers only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from orchestrator.models import Batch, BatchTask, Membership, Tenant
from orchestrator.services.batches import batch_create
from orchestrator.task_results import batch_id_of, task_results_of
from tasks.analytics import analyze_errors_task
from tasks.maintenance import reconcile_task, task_results_cleanup_task
from tests.support.factories import batch_request, essay_items
from tests.support.waiting import wait_for, wait_for_terminal

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("celery_worker", "essay_pipeline")]

STORED_PER_BATCH = {"tasks.orchestration.batch_start_task", "tasks.phases.run_batch_phase_task"}
IN_REDIS = {
    "tasks.phases.run_item_chunk_task",
    "tasks.orchestration.phase_complete_task",
    "tasks.orchestration.phase_fail_task",
}


def _finished_batch(tenant: str) -> Batch:
    # More items than BOS_INLINE_MAX_ITEMS (10): phases fan out to chunk and per-batch tasks.
    result = batch_create(request=batch_request(tenant=tenant, items=essay_items(12, bad={2})), actor="test")
    batch = wait_for_terminal(result.batch.id)
    # The per-batch phase's result is stored as the task returns, just after the batch ended.
    wait_for(
        lambda: task_results_of(batch).filter(task_name="tasks.phases.run_batch_phase_task").exists(),
        what="the aggregate phase's task result",
    )
    return batch


def _staff(
    username: str, *, tenant: str | None = None, role: str = "viewer", superuser: bool = False
) -> Client:
    user = get_user_model().objects.create(username=username, is_staff=True, is_superuser=superuser)
    if tenant:
        Membership.objects.create(user=user, tenant=Tenant.objects.get(slug=tenant), role=role)
    client = Client()
    client.force_login(user)
    return client


def test_a_batchs_own_tasks_store_extended_results_in_the_database_and_chunks_stay_in_redis() -> None:
    batch = _finished_batch("acme")

    stored = list(task_results_of(batch))
    names = {r.task_name for r in stored}
    assert names >= STORED_PER_BATCH
    assert not names & IN_REDIS
    assert not TaskResult.objects.filter(task_name__in=IN_REDIS).exists()
    phase = next(r for r in stored if r.task_name == "tasks.phases.run_batch_phase_task")
    assert phase.status == "SUCCESS"
    # Extended: arguments (with the batch named beside them), worker and queue.
    assert f"batch_id={batch.id}" in phase.task_args
    assert "phase=aggregate" in phase.task_args
    assert phase.worker.startswith("test-")
    assert BatchTask.objects.get(task_id=phase.task_id).batch_id == batch.id


def test_maintenance_and_analytics_results_are_stored_without_a_batch() -> None:
    reconcile = reconcile_task.delay()
    analytics = analyze_errors_task.delay()

    assert "started" in reconcile.get(timeout=30)
    assert "fingerprints" in analytics.get(timeout=30)
    for sent in (reconcile, analytics):
        row = TaskResult.objects.get(task_id=sent.id)
        assert row.status == "SUCCESS" and row.worker
        assert not BatchTask.objects.filter(task_id=sent.id).exists()


def test_the_admin_shows_a_member_their_batches_task_results_only() -> None:
    own = _finished_batch("acme")
    other = _finished_batch("globex")
    platform = reconcile_task.delay()
    platform.get(timeout=30)
    changelist = reverse("admin:django_celery_results_taskresult_changelist")

    viewer = _staff("acme-viewer", tenant="acme")
    shown = {r.task_id for r in viewer.get(changelist).context["cl"].result_list}
    assert shown == {r.task_id for r in task_results_of(own)}
    assert not shown & {r.task_id for r in task_results_of(other)}
    assert platform.id not in shown
    foreign = task_results_of(other).first()
    assert foreign is not None
    page = viewer.get(reverse("admin:django_celery_results_taskresult_change", args=[foreign.pk]))
    assert page.status_code == 302  # as for an object that does not exist

    superuser = _staff("root", superuser=True)
    everything = {r.task_id for r in superuser.get(changelist).context["cl"].result_list}
    assert platform.id in everything and shown <= everything

    # The batch's page links to its task results, which the link's filter narrows to.
    batch_page = viewer.get(reverse("admin:orchestrator_batch_change", args=[own.id])).content.decode()
    link = f"{changelist}?batch={own.id}"
    assert link in batch_page
    narrowed = {r.task_id for r in superuser.get(link).context["cl"].result_list}
    assert narrowed == {r.task_id for r in task_results_of(own)}


def test_the_cleanup_deletes_results_older_than_the_result_expiry_and_their_links() -> None:
    batch = _finished_batch("acme")
    old = task_results_of(batch).first()
    assert old is not None
    TaskResult.objects.filter(pk=old.pk).update(date_done=timezone.now() - timedelta(days=2))

    outcome = task_results_cleanup_task.delay().get(timeout=30)

    assert outcome["deleted"] >= 1
    assert not TaskResult.objects.filter(pk=old.pk).exists()
    assert not BatchTask.objects.filter(task_id=old.task_id).exists()
    assert task_results_of(batch).exists()  # the recent ones stay


def test_a_request_names_its_batch_only_through_a_valid_batch_context() -> None:
    class Request:
        bos_log: object = None

    request = Request()
    assert batch_id_of(None) is None
    assert batch_id_of(request) is None
    request.bos_log = {"batch_id": "not-a-uuid"}
    assert batch_id_of(request) is None
    request.bos_log = {"batch_id": "45741cc1-7e5d-4c1e-9a0b-3f9d2a1b0c11", "phase": "score"}
    assert str(batch_id_of(request)) == "45741cc1-7e5d-4c1e-9a0b-3f9d2a1b0c11"
