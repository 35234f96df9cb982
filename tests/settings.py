"""Settings for the test run: the project's settings, with names of their own.

Queue and topic names get a per-run suffix, so a test run never shares work with a
`make run` on the same broker, nor reads another run's Kafka messages. The Celery
worker that the tests start inherits these variables.
"""

from __future__ import annotations

import os
import socket
import uuid

os.environ.setdefault("BOS_ENV", "test")
_RUN = os.environ.setdefault("BOS_TEST_RUN_ID", uuid.uuid4().hex[:8])
os.environ.setdefault("BOS_QUEUE_PREFIX", f"test-{_RUN}.")
os.environ.setdefault("BOS_TOPIC_REQUESTS", f"test-{_RUN}.batch.requested")
os.environ.setdefault("BOS_TOPIC_EVENTS", f"test-{_RUN}.batch.events")
os.environ.setdefault("BOS_TOPIC_DLQ", f"test-{_RUN}.batch.requested.dlq")
os.environ.setdefault("BOS_TOPIC_SYSTEM_EVENTS", f"test-{_RUN}.system.events")
os.environ.setdefault("BOS_CONSUMER_GROUP", f"test-{_RUN}")
# One partition for events: tests read a topic from its start, in order.
os.environ.setdefault("BOS_KAFKA_EVENT_PARTITIONS", "1")
os.environ.setdefault("BOS_HANDLER_MODULES", "tasks.handlers.essays,tests.support.handlers")
# Priority batches get a queue of their own (tests/integration/test_routing.py).
os.environ.setdefault("BOS_ROUTES", '[{"queue": "bos.priority", "min_priority": 8}]')
# Breakers trip and probe quickly in tests.
os.environ.setdefault("BOS_BREAKER_FAIL_MAX", "3")
os.environ.setdefault("BOS_BREAKER_RESET_SECONDS", "2")
# Retries waiting longer than this are stored and sent by beat (test_retries.py).
os.environ.setdefault("BOS_MAX_COUNTDOWN_SECONDS", "5")
# Compensations retry quickly in tests.
os.environ.setdefault("BOS_COMPENSATION_BACKOFF_SECONDS", "0.1")
# The demo scoring service of this run gets a free port of its own (the default
# BOS_SERVICES points "scoring" at it; tests/integration/test_service_clients.py starts it).
if "BOS_SCORING_PORT" not in os.environ:
    with socket.socket() as _probe:
        _probe.bind(("127.0.0.1", 0))
        os.environ["BOS_SCORING_PORT"] = str(_probe.getsockname()[1])
# The run's own metrics folder (BOS_METRICS_DIR), shared with the processes it starts and
# removed at the end (tests/conftest.py): a test run never adds to a `make run`'s metrics.
os.environ.setdefault(
    "BOS_METRICS_DIR", os.path.join(os.environ.get("BOS_HOME", ".bos"), f"metrics-test-{_RUN}")
)
# Test workers close connections after each task, so the test database can be dropped.
os.environ.setdefault("BOS_DB_CONN_MAX_AGE", "0")

from bos_project.settings import *  # noqa: E402, F403
from bos_project.settings import CACHES  # noqa: E402

# The run's own cache keys (rate-limit counters, de-duplication keys), shared with the
# processes it starts, never with a `make run` on the same Redis.
CACHES["default"]["KEY_PREFIX"] = f"bos-test-{_RUN}"
