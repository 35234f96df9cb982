"""`python -m benchmarks.dashboard` (`make bench-dashboard`): what `/dashboard/` costs.

Fills the configured database with a week of work for two tenants (`--batches` batches
spread evenly over the last 7 days, each with a per-item phase of 5 chunks and a
per-batch phase, its finishing event, and an alert every 10 batches), then times the
dashboard's reads (`orchestrator.dashboard.panels.build`, every panel but the service
probes, which wait on the broker, not the database) for each range, as a superuser and as
a member of one tenant: the median of `--repeat` runs, and the number of queries.

Then it adds as much again dated 8 to 35 days ago, outside every range, and times the
same again: the reads are bounded by their range, so the time should not follow the size
of the tables. Everything the run made is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")
# As deployed: DEBUG (on by default in development) records every query, which costs.
os.environ.setdefault("BOS_DEBUG", "false")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import AbstractBaseUser  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.access import User  # noqa: E402
from orchestrator.dashboard import panels  # noqa: E402
from orchestrator.dashboard.selectors import Viewer  # noqa: E402
from orchestrator.dashboard.windows import WINDOWS  # noqa: E402
from orchestrator.models import (  # noqa: E402
    Alert,
    Batch,
    ChunkRun,
    Membership,
    OutboxEvent,
    PhaseRun,
    Pipeline,
    PipelineVersion,
    Tenant,
)

RUN_ID = uuid.uuid4().hex[:8]
DEFINITION = {
    "phases": [
        {"name": "score", "handler": "essays.validate", "mode": "per_item"},
        {"name": "report", "handler": "essays.aggregate", "mode": "per_batch", "after": ["score"]},
    ]
}
CHUNKS = 5
console = Console()


def fill(
    tenants: list[Tenant], version: PipelineVersion, *, batches: int, newest: datetime, span: timedelta
) -> None:
    """`batches` finished batches with their phases, chunks, events and alerts, finishing
    evenly between `newest - span` and `newest`."""
    gap = span / batches
    rows = []
    for i in range(batches):
        finished = newest - i * gap
        rows.append(
            Batch(
                tenant=tenants[i % len(tenants)],
                external_id=f"bench-{RUN_ID}-{newest:%j}-{i}",
                pipeline_version=version,
                state="completed" if i % 7 else "failed",
                items_total=CHUNKS * 20,
                items_succeeded=CHUNKS * 19,
                items_failed=CHUNKS,
                started_at=finished - timedelta(seconds=90),
                finished_at=finished,
            )
        )
    Batch.objects.bulk_create(rows, batch_size=2000)
    phases: list[PhaseRun] = []
    scored: list[tuple[PhaseRun, datetime]] = []  # each per-item phase, and when it finished
    events, alerts = [], []
    for i, b in enumerate(rows):
        finished = newest - i * gap
        phases.append(
            PhaseRun(
                batch=b,
                tenant=b.tenant,
                name="score",
                handler="essays.validate",
                mode="per_item",
                position=0,
                state="succeeded",
                items_total=b.items_total,
                items_done=b.items_total,
                started_at=b.started_at,
                work_started_at=b.started_at,
                finished_at=finished - timedelta(seconds=20),
            )
        )
        scored.append((phases[-1], finished - timedelta(seconds=20)))
        phases.append(
            PhaseRun(
                batch=b,
                tenant=b.tenant,
                name="report",
                handler="essays.aggregate",
                mode="per_batch",
                position=1,
                state=b.state.replace("completed", "succeeded"),
                started_at=finished - timedelta(seconds=20),
                finished_at=finished,
            )
        )
        envelope = {
            "event_type": f"batch.{b.state}",
            "tenant": b.tenant.slug,
            "data": {"batch_id": str(b.id)},
        }
        events.append(
            OutboxEvent(
                tenant=b.tenant,
                batch=b,
                event_type=f"batch.{b.state}",
                key=str(b.id),
                envelope=envelope,
                published_at=b.finished_at,
            )
        )
    PhaseRun.objects.bulk_create(phases, batch_size=2000)
    OutboxEvent.objects.bulk_create(events, batch_size=2000)
    chunks = [
        ChunkRun(
            phase_run=p,
            start=c * 20,
            end=(c + 1) * 20,
            succeeded=19,
            failed=1,
            started_at=at - timedelta(seconds=5),
            finished_at=at,
        )
        for p, at in scored
        for c in range(CHUNKS)
    ]
    ChunkRun.objects.bulk_create(chunks, batch_size=5000)
    for i, b in enumerate(rows[::10]):
        alerts.append(
            Alert(
                tenant=b.tenant,
                kind=("anomaly", "batch.sla_at_risk", "new_error_pattern")[i % 3],
                message="bench",
                details={"batch_id": str(b.id), "pipeline": "bench"},
            )
        )
    Alert.objects.bulk_create(alerts, batch_size=2000)
    # auto_now_add stamped them now: date them as if they had happened when they finished.
    ids = [b.id for b in rows]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Batch._meta.db_table} SET created_at = started_at - interval '10 seconds' WHERE id = ANY(%s)",
            [ids],
        )
        cursor.execute(
            f"UPDATE {OutboxEvent._meta.db_table} o SET created_at = b.finished_at FROM {Batch._meta.db_table} b"
            " WHERE o.batch_id = b.id AND b.id = ANY(%s)",
            [ids],
        )
        cursor.execute(
            f"UPDATE {Alert._meta.db_table} a SET created_at = b.finished_at FROM {Batch._meta.db_table} b"
            " WHERE b.id = (a.details->>'batch_id')::uuid AND b.id = ANY(%s)",
            [ids],
        )
        cursor.execute("ANALYZE")


def timed(user: User, window_key: str, repeat: int) -> tuple[float, float, int]:
    """Median and max seconds of building the page's panels, and its queries."""
    window = WINDOWS[window_key]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        panels.build(Viewer(user), window, timezone.now(), None)
        times.append(time.perf_counter() - began)
    with CaptureQueriesContext(connection) as queries:
        panels.build(Viewer(user), window, timezone.now(), None)
    return statistics.median(times), max(times), len(queries)


def measure(label: str, users: Mapping[str, User], repeat: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for who, user in users.items():
        for key in WINDOWS:
            median, most, queries = timed(user, key, repeat)
            rows.append((label, who, key, f"{median * 1000:.0f}", f"{most * 1000:.0f}", str(queries)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batches", type=int, default=20_000, help="batches in the last 7 days (and again before)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per range and user")
    args = parser.parse_args()

    slugs = [f"bench-{RUN_ID}-a", f"bench-{RUN_ID}-b"]
    tenants = [Tenant.objects.create(slug=slug) for slug in slugs]
    pipeline = Pipeline.objects.create(name=f"bench-{RUN_ID}")
    version = PipelineVersion.objects.create(
        pipeline=pipeline, version=1, definition=DEFINITION, checksum="0" * 64
    )
    users_model = get_user_model()
    root = users_model.objects.create_superuser(f"bench-{RUN_ID}-root", None, None)
    member = users_model.objects.create_user(f"bench-{RUN_ID}-member")
    Membership.objects.create(user=member, tenant=tenants[0], role="viewer")
    users: dict[str, User] = {"superuser": root, "member of 1 of 2": member}
    now = timezone.now()
    try:
        began = time.perf_counter()
        fill(tenants, version, batches=args.batches, newest=now, span=timedelta(days=7))
        console.print(
            f"filled the last 7 days: {args.batches:,} batches in {time.perf_counter() - began:.0f} s"
        )
        rows = measure("7 days of data", users, args.repeat)
        fill(tenants, version, batches=args.batches, newest=now - timedelta(days=8), span=timedelta(days=27))
        console.print(f"added {args.batches:,} batches 8–35 days old")
        rows += measure("and as much before", users, args.repeat)
    finally:
        cleanup(tenants, pipeline, [root, member])
    table = Table(
        title=f"/dashboard/ reads, {args.batches:,} batches a week ({CHUNKS} chunks, 2 phases each)"
    )
    for column in ("data", "viewer", "range", "median ms", "max ms", "queries"):
        table.add_column(column, justify="right" if column.endswith(("ms", "queries")) else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def cleanup(tenants: list[Tenant], pipeline: Pipeline, users: list[AbstractBaseUser]) -> None:
    ids = [t.id for t in tenants]
    Alert.objects.filter(tenant_id__in=ids).delete()
    OutboxEvent.objects.filter(tenant_id__in=ids).delete()
    Batch.objects.filter(tenant_id__in=ids).delete()  # phases and chunks go with them
    Membership.objects.filter(tenant_id__in=ids).delete()
    Tenant.objects.filter(id__in=ids).delete()
    PipelineVersion.objects.filter(pipeline=pipeline).delete()
    pipeline.delete()
    for user in users:
        user.delete()


if __name__ == "__main__":
    main()
