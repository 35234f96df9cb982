"""Auditing a batch operation where it happens: in the service, whoever called it (the API,
the admin, a Kafka command, a management command).

`audited_batch_operation("batch.cancel")` wraps a service taking `batch_id`, `actor` and
`reason`: the operation and its `ok` record commit together; a refusal (409, 404) rolls
the operation back and is recorded `error` after it, with the code. The actor is the one
the service is given; the address and correlation id come from the acting context.
The wrapped service carries its action as `audit_action` (the admin records a refusal
under it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from django.db import transaction

from orchestrator.audit.records import Outcome, record
from orchestrator.audit.who import Who, current_who
from orchestrator.errors import OrchestrationError, PermissionDenied
from orchestrator.models import Batch

P = ParamSpec("P")
B = TypeVar("B", bound=Batch)

MARK = "_bos_audited"


def as_actor(actor: str) -> Who:
    """The acting context's address and correlation id, with `actor` as who acts."""
    return replace(current_who(), actor=actor)


def mark_recorded(exc: BaseException) -> None:
    """Tell the edges (the API's error handler) that `exc` is in the audit log already."""
    setattr(exc, MARK, True)


def is_recorded(exc: BaseException) -> bool:
    return bool(getattr(exc, MARK, False))


def audited_batch_operation(action: str) -> Callable[[Callable[P, B]], Callable[P, B]]:
    def wrap(service: Callable[P, B]) -> Callable[P, B]:
        @wraps(service)
        def run(*args: P.args, **kwargs: P.kwargs) -> B:
            batch_id: Any = kwargs["batch_id"]
            who = as_actor(str(kwargs["actor"]))
            detail: dict[str, Any] = {"reason": kwargs.get("reason") or ""}
            try:
                with transaction.atomic():
                    batch = service(*args, **kwargs)
                    record(
                        action,
                        object_type="batch",
                        object_id=batch.pk,
                        tenant=batch.tenant_id,
                        detail={**detail, "state": batch.state},
                        who=who,
                    )
                return batch
            except OrchestrationError as exc:
                tenant = Batch.objects.filter(pk=batch_id).values_list("tenant_id", flat=True).first()
                record(
                    action,
                    outcome=Outcome.DENIED if isinstance(exc, PermissionDenied) else Outcome.ERROR,
                    object_type="batch",
                    object_id=batch_id,
                    tenant=tenant,
                    detail={**detail, "code": exc.code, "message": exc.message},
                    who=who,
                )
                mark_recorded(exc)
                raise

        run.audit_action = action  # type: ignore[attr-defined]
        return run

    return wrap
