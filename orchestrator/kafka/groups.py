"""Consumer groups: lag, description, live members, and moving a group's offsets.

The reads and writes behind `manage.py kafka_groups`, the lag series of `/metrics` and
the lag alert. A `Broker` holds one admin client and one group-less consumer (made on
first use, closed together); the functions over it return plain dataclasses, and plans
(`plan_copy`, `plan_reset`, `plan_import`) change nothing until `apply_plan`.

Log end offsets. Apache Kafka answers ListOffsets(LATEST) with the log end. The embedded
broker (tansu) answers the base offset of the partition's last record batch plus one, so
after a batched send of ten records it says 1 where the truth is 10; the high watermark
it returns in a Fetch response is right. With `BOS_KAFKA_END_OFFSETS=highwater` (the
default) `Broker.end_offsets` asks ListOffsets, seeks the group-less consumer to that
answer and polls once with tiny fetch sizes: the fetch response carries the partition's
high watermark, which is the end on every broker. On Apache Kafka the consumer is then at
the end, so the fetch carries no records and costs one small request; on tansu it carries
the last batch. The protocol gives no way to tell the brokers apart (tansu reports itself
as Kafka 3.9), so `list_offsets` (ListOffsets alone) is a setting for Apache Kafka
deployments that want to save the fetch, not a guess.

Lag of a partition = log end − the offset the group resumes from: its committed offset,
or the earliest offset when it has none (BOS's consumer resets to `earliest`) or when the
committed one is below the earliest (retention removed those records). Never negative.

Live members. A group's offsets must not be moved under running consumers, which would
overwrite them with their next commit. `live_members` asks DescribeGroups. kafka-python
cannot decode tansu's DescribeGroups answer (it sends every bit of `authorized_operations`
set, and decoding fails on code 15), so the admin client here drops codes it does not
know; tansu then reports the group's state and members (not their assignments). Where
DescribeGroups fails anyway, a member check re-commits one committed offset unchanged from
outside the group (generation −1): Apache Kafka and tansu both refuse such a commit with
UNKNOWN_MEMBER_ID while the group has members, and accept it (a no-op) when it is empty.
The commit that applies a plan is made the same way, so even a member joining between the
check and the write makes the broker refuse it. A consumer killed without leaving stays a
member until its session times out on Apache Kafka; tansu keeps it until the group
rebalances (see docs/consumer-groups.md).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ACLOperation
from kafka.errors import (
    IllegalGenerationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "bos.kafka-group-offsets"
EXPORT_VERSION = 1
# Group states in which consumers are members (KIP-518 names; tansu says "Unknown" while
# a member is joining, so members are counted too).
ACTIVE_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance", "Assigning", "Reconciling"})
# Errors an OffsetCommit from outside the group gets while the group has members.
MEMBER_ERRORS: tuple[type[KafkaError], ...] = (
    UnknownMemberIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
)
UNREACHABLE: tuple[type[Exception], ...] = (KafkaTimeoutError, KafkaConnectionError)
_KNOWN_ACL_OPERATIONS = frozenset(op.value for op in ACLOperation)


class GroupError(Exception):
    """An operation on a group that cannot be made; `code` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BrokerUnavailable(GroupError):
    def __init__(self, message: str) -> None:
        super().__init__("broker_unavailable", message)


class LiveMembers(GroupError):
    def __init__(self, group: str, detail: str) -> None:
        super().__init__(
            "group_has_live_members",
            f"group {group!r} has live members ({detail}); stop its consumers first, then run this again",
        )


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has no committed offset here
    earliest: int
    end: int

    @property
    def lag(self) -> int:
        resume = self.earliest if self.committed is None else max(self.committed, self.earliest)
        return max(self.end - resume, 0)


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: tuple[PartitionLag, ...]
    end_source: str  # "highwater" or "list_offsets"
    measured_at: datetime

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "total_lag": self.total,
            "end_source": self.end_source,
            "measured_at": _iso(self.measured_at),
            "partitions": [
                {
                    "partition": p.partition,
                    "committed": p.committed,
                    "earliest": p.earliest,
                    "end": p.end,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assignment: dict[str, list[int]] | None  # None: the broker did not say


@dataclass(frozen=True)
class GroupDescription:
    group: str
    available: bool  # False: the broker could not describe the group
    state: str = "unavailable on this broker"
    protocol: str = ""
    members: tuple[Member, ...] = ()
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "available": self.available,
            "state": self.state,
            "protocol": self.protocol,
            "error": self.error or None,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "assignment": m.assignment,
                }
                for m in self.members
            ],
        }


@dataclass(frozen=True)
class LiveCheck:
    live: bool | None  # None: the broker cannot tell
    how: str  # "describe_groups", "offset_commit_probe" or "none"
    detail: str


@dataclass(frozen=True)
class PlanRow:
    topic: str
    partition: int
    current: int | None
    new: int
    note: str = ""

    @property
    def changes(self) -> bool:
        return self.current != self.new


@dataclass(frozen=True)
class OffsetPlan:
    """New committed offsets for a group, computed but not applied."""

    action: str
    group: str
    description: str
    rows: tuple[PlanRow, ...]

    @property
    def changes(self) -> tuple[PlanRow, ...]:
        return tuple(r for r in self.rows if r.changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "group": self.group,
            "description": self.description,
            "rows": [
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "current": r.current,
                    "new": r.new,
                    "note": r.note,
                }
                for r in self.rows
            ],
        }


# ---------------------------------------------------------------------------------------
# The broker connection
# ---------------------------------------------------------------------------------------


class _AdminClient(KafkaAdminClient):  # type: ignore[misc]
    """kafka-python's admin client, tolerant of ACL operation codes it does not know.

    tansu sets every bit of `authorized_operations` in DescribeGroups, and kafka-python
    raises on the unknown codes, which made describe_groups unusable there.
    """

    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        codes = obj.get("authorized_operations")
        if codes is not None:
            obj["authorized_operations"] = sorted(
                ACLOperation(code).name for code in codes if code in _KNOWN_ACL_OPERATIONS and code > 2
            )
        return obj


class Broker:
    """One admin client and one group-less consumer, each made on first use.

    Every request is bounded by `timeout` seconds; a broker that cannot be reached raises
    `BrokerUnavailable`. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: list[str] | None = None,
        timeout: float = 10.0,
        end_offsets_mode: str | None = None,
    ) -> None:
        self.bootstrap_servers = list(bootstrap_servers or settings.KAFKA_BOOTSTRAP_SERVERS)
        self.timeout = timeout
        self.end_offsets_mode = end_offsets_mode or settings.BOS_KAFKA_END_OFFSETS
        self._admin: _AdminClient | None = None
        self._consumer: KafkaConsumer | None = None
        self._client_id = f"bos-groups-{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing must not hide the real error
                    logger.debug("closing a Kafka client failed", exc_info=True)
        self._admin = self._consumer = None

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)

    def _ms(self) -> int:
        return max(int(self.timeout * 1000), 200)

    def _unreachable(self, exc: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(f"no Kafka broker answered at {self.bootstrap} ({type(exc).__name__})")

    @property
    def admin(self) -> _AdminClient:
        if self._admin is None:
            try:
                self._admin = _AdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    request_timeout_ms=self._ms(),
                    bootstrap_timeout_ms=self._ms(),
                )
            except UNREACHABLE as exc:
                raise self._unreachable(exc) from exc
        return self._admin

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            try:
                self._consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    group_id=None,
                    enable_auto_commit=False,
                    allow_auto_create_topics=False,
                    enable_incremental_fetch_sessions=False,
                    # Only the fetch response's high watermark is wanted, not records.
                    fetch_max_wait_ms=10,
                    fetch_max_bytes=1,
                    max_partition_fetch_bytes=1,
                    request_timeout_ms=max(self._ms(), 1000),
                    bootstrap_timeout_ms=self._ms(),
                )
            except UNREACHABLE as exc:
                raise self._unreachable(exc) from exc
        return self._consumer

    # -- reads ---------------------------------------------------------------------------

    def partitions(self, topic: str) -> list[int]:
        """The topic's partition numbers; GroupError `unknown_topic` if it does not exist."""
        try:
            described = self.admin.describe_topics([topic])
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        except KafkaError as exc:
            raise GroupError("unknown_topic", f"topic {topic!r} could not be described: {exc}") from exc
        for entry in described:
            if entry.get("name", entry.get("topic")) == topic and not entry.get("error_code"):
                partitions = sorted(p["partition_index"] for p in entry.get("partitions", []))
                if partitions:
                    return partitions
        raise GroupError("unknown_topic", f"topic {topic!r} does not exist")

    def earliest_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in partitions]
        try:
            found = self.consumer.beginning_offsets(tps, timeout_ms=self._ms())
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        return {tp.partition: int(offset) for tp, offset in found.items()}

    def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The log end of each partition (the offset the next record will get).

        See the module docstring for why the `highwater` mode reads the fetch response.
        """
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer = self.consumer
        try:
            listed = {tp: int(o) for tp, o in consumer.end_offsets(tps, timeout_ms=self._ms()).items()}
            if self.end_offsets_mode == "list_offsets" or not tps:
                return {tp.partition: o for tp, o in listed.items()}
            consumer.unsubscribe()  # a fresh assignment: no high watermark left from before
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, listed[tp])
            high: dict[TopicPartition, int] = {}
            deadline = time.monotonic() + self.timeout
            while True:
                consumer.poll(timeout_ms=50, max_records=1, update_offsets=False)
                for tp in tps:
                    value = consumer.highwater(tp)
                    if value is not None:
                        high[tp] = int(value)
                if len(high) == len(tps) or time.monotonic() > deadline:
                    break
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        missing = [tp.partition for tp in tps if tp not in high]
        if missing:
            raise BrokerUnavailable(
                f"no fetch response for {topic} partition(s) {missing} within {self.timeout:g}s"
            )
        for tp in tps:
            if high[tp] != listed[tp]:
                logger.debug("%s: ListOffsets said %d, the high watermark is %d", tp, listed[tp], high[tp])
        return {tp.partition: max(high[tp], listed[tp]) for tp in tps}

    def committed(self, group: str, topic: str | None = None) -> dict[str, dict[int, int]]:
        """{topic: {partition: offset}} the group committed (only partitions with a commit)."""
        try:
            if topic is None:
                spec: dict[str, list[TopicPartition] | None] = {group: None}
            else:
                spec = {group: [TopicPartition(topic, p) for p in self.partitions(topic)]}
            found = self.admin.list_group_offsets(spec).get(group, {})
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        except KafkaError as exc:
            raise GroupError("group_offsets", f"offsets of group {group!r} could not be read: {exc}") from exc
        result: dict[str, dict[int, int]] = {}
        for tp, meta in found.items():
            if meta.offset is not None and meta.offset >= 0:
                result.setdefault(tp.topic, {})[tp.partition] = int(meta.offset)
        return result

    def offsets_for_time(self, topic: str, partitions: Iterable[int], at: datetime) -> dict[int, int | None]:
        """The first offset of each partition whose record time is ≥ `at`; None: no such record.

        Apache Kafka answers "none" with offset −1; tansu with timestamp −1 (offset 0).
        """
        ms = int(at.timestamp() * 1000)
        tps = [TopicPartition(topic, p) for p in partitions]
        try:
            found = self.consumer.offsets_for_times({tp: ms for tp in tps}, timeout_ms=self._ms())
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        result: dict[int, int | None] = {}
        for tp in tps:
            hit = found.get(tp)
            ok = hit is not None and hit.offset >= 0 and (hit.timestamp is None or hit.timestamp >= 0)
            result[tp.partition] = int(hit.offset) if ok and hit is not None else None
        return result

    # -- groups --------------------------------------------------------------------------

    def describe(self, group: str) -> GroupDescription:
        try:
            raw = self.admin.describe_groups([group]).get(group)
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        except Exception as exc:  # noqa: BLE001 - a broker whose answer kafka-python cannot read
            logger.info("describe_groups(%s) failed: %s", group, exc)
            return GroupDescription(group=group, available=False, error=f"{type(exc).__name__}: {exc}")
        if raw is None or raw.get("error"):
            error = raw.get("error") if raw else "no answer for the group"
            return GroupDescription(group=group, available=False, error=str(error))
        members = tuple(
            Member(
                member_id=str(m.get("member_id") or ""),
                client_id=str(m.get("client_id") or ""),
                host=str(m.get("client_host") or ""),
                assignment=_assignment(m.get("member_assignment")),
            )
            for m in raw.get("members") or []
        )
        return GroupDescription(
            group=group,
            available=True,
            state=str(raw.get("group_state") or "Unknown"),
            protocol=str(raw.get("protocol_data") or ""),
            members=members,
        )

    def live_members(self, group: str, *, probe: bool = True) -> LiveCheck:
        """Whether consumers are members of `group` now (see the module docstring).

        `probe=False` never writes: where DescribeGroups fails, the answer is then None.
        """
        described = self.describe(group)
        if described.available:
            live = bool(described.members) or described.state in ACTIVE_STATES
            detail = f"state {described.state}, {len(described.members)} member(s)"
            return LiveCheck(live=live, how="describe_groups", detail=detail)
        if not probe:
            return LiveCheck(None, "none", f"the broker cannot describe groups ({described.error})")
        committed = self.committed(group)
        for topic, offsets in sorted(committed.items()):
            for partition, offset in sorted(offsets.items()):
                error = self._commit_from_outside(group, {TopicPartition(topic, partition): offset})
                if error is None:
                    return LiveCheck(
                        False, "offset_commit_probe", "a commit from outside the group was accepted"
                    )
                if issubclass(error, MEMBER_ERRORS):
                    return LiveCheck(True, "offset_commit_probe", f"the broker answered {error.__name__}")
                return LiveCheck(None, "offset_commit_probe", f"the broker answered {error.__name__}")
        return LiveCheck(
            None, "none", "the broker cannot describe groups and the group has no committed offset to probe"
        )

    def _commit_from_outside(self, group: str, offsets: dict[TopicPartition, int]) -> type[KafkaError] | None:
        """Commit as the admin tools do (generation −1, no member id); the first error or None."""
        try:
            result = self.admin.alter_group_offsets(
                group, {tp: OffsetAndMetadata(offset, "", None) for tp, offset in offsets.items()}
            )
        except UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        for tp in sorted(result, key=lambda t: (t.topic, t.partition)):
            if result[tp] is not NoError:
                return result[tp]  # type: ignore[no-any-return]
        return None

    def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Set the group's committed offsets; LiveMembers if the broker says it has members."""
        error = self._commit_from_outside(group, offsets)
        if error is None:
            return
        if issubclass(error, MEMBER_ERRORS):
            raise LiveMembers(group, f"the broker refused the commit: {error.__name__}")
        raise GroupError("commit_failed", f"the broker refused the commit to {group!r}: {error.__name__}")


def _assignment(raw: Any) -> dict[str, list[int]] | None:
    """A member's assigned partitions from kafka-python's decoded assignment, if any."""
    if raw is None or raw in ("", b""):
        return None
    if hasattr(raw, "partitions"):
        result: dict[str, list[int]] = {}
        for tp in raw.partitions():
            result.setdefault(tp.topic, []).append(tp.partition)
        return {t: sorted(ps) for t, ps in sorted(result.items())}
    if isinstance(raw, dict):
        pairs = raw.get("assigned_partitions") or []
        result = {}
        for pair in pairs:
            topic = pair.get("topic") if isinstance(pair, dict) else pair[0]
            parts = pair.get("partitions") if isinstance(pair, dict) else pair[1]
            result[str(topic)] = sorted(int(p) for p in parts or [])
        return result
    return None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clamp(offset: int, earliest: int, end: int) -> tuple[int, str]:
    if offset < earliest:
        return earliest, f"{offset} is before the earliest offset; set to {earliest}"
    if offset > end:
        return end, f"{offset} is past the log end; set to {end}"
    return offset, ""


# ---------------------------------------------------------------------------------------
# Lag
# ---------------------------------------------------------------------------------------


def topic_lag(broker: Broker, group: str, topic: str, *, now: datetime | None = None) -> TopicLag:
    """The group's lag on every partition of the topic."""
    partitions = broker.partitions(topic)
    committed = broker.committed(group, topic).get(topic, {})
    earliest = broker.earliest_offsets(topic, partitions)
    end = broker.end_offsets(topic, partitions)
    rows = tuple(
        PartitionLag(partition=p, committed=committed.get(p), earliest=earliest[p], end=end[p])
        for p in partitions
    )
    return TopicLag(
        group=group,
        topic=topic,
        partitions=rows,
        end_source=broker.end_offsets_mode,
        measured_at=now or datetime.now(tz=UTC),
    )


def group_topics(broker: Broker, group: str) -> list[str]:
    """The topics on which the group has committed offsets."""
    return sorted(broker.committed(group))


# ---------------------------------------------------------------------------------------
# Plans: copy, reset, import; and export
# ---------------------------------------------------------------------------------------


def _rows(broker: Broker, group: str, topic: str, wanted: dict[int, int]) -> list[PlanRow]:
    """Plan rows setting `wanted` offsets, each kept within [earliest, log end]."""
    current = broker.committed(group, topic).get(topic, {})
    partitions = sorted(wanted)
    earliest = broker.earliest_offsets(topic, partitions)
    end = broker.end_offsets(topic, partitions)
    rows = []
    for p in partitions:
        new, note = _clamp(wanted[p], earliest[p], end[p])
        rows.append(PlanRow(topic=topic, partition=p, current=current.get(p), new=new, note=note))
    return rows


def plan_copy(broker: Broker, *, source: str, target: str, topic: str | None = None) -> OffsetPlan:
    """The target group's offsets made equal to the source group's (one topic, or all it has)."""
    if source == target:
        raise GroupError("same_group", "--from and --to name the same group")
    committed = broker.committed(source, topic)
    if topic is not None:
        committed = {topic: committed.get(topic, {})}
    if not any(committed.values()):
        where = f" on {topic!r}" if topic else ""
        raise GroupError("nothing_to_copy", f"group {source!r} has no committed offsets{where}")
    rows: list[PlanRow] = []
    for name in sorted(committed):
        if committed[name]:
            rows.extend(_rows(broker, target, name, committed[name]))
    topics = ", ".join(sorted(t for t in committed if committed[t]))
    return OffsetPlan(
        "copy-offsets", target, f"copy offsets of {source!r} to {target!r} on {topics}", tuple(rows)
    )


def plan_reset(
    broker: Broker,
    *,
    group: str,
    topic: str,
    to: str,
    at: datetime | None = None,
) -> OffsetPlan:
    """Every partition of the topic to its earliest offset, its log end, or the first
    record at or after `at` (the log end where there is none)."""
    partitions = broker.partitions(topic)
    end = broker.end_offsets(topic, partitions)
    if to == "earliest":
        wanted = broker.earliest_offsets(topic, partitions)
        description = f"reset {group!r} on {topic!r} to the earliest offsets"
    elif to == "latest":
        wanted = end
        description = f"reset {group!r} on {topic!r} to the log end"
    elif to == "datetime":
        if at is None:
            raise GroupError("bad_reset", "a reset to a time needs the time")
        found = broker.offsets_for_time(topic, partitions, at)
        wanted = {p: end[p] if (offset := found[p]) is None else offset for p in partitions}
        description = f"reset {group!r} on {topic!r} to the first records at or after {_iso(at)}"
    else:
        raise GroupError("bad_reset", f"unknown reset target {to!r}")
    return OffsetPlan(
        f"reset-offsets --to-{to}", group, description, tuple(_rows(broker, group, topic, wanted))
    )


def export_offsets(broker: Broker, *, group: str, topic: str, now: datetime | None = None) -> dict[str, Any]:
    """The group's committed offsets on the topic as the export document (docs/consumer-groups.md)."""
    broker.partitions(topic)  # an unknown topic is an error, not an empty export
    committed = broker.committed(group, topic).get(topic, {})
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "group": group,
        "topic": topic,
        "partitions": {str(p): committed[p] for p in sorted(committed)},
        "exported_at": _iso(now or datetime.now(tz=UTC)),
        "broker": broker.bootstrap,
    }


def read_export(text: str) -> dict[str, Any]:
    """Parse and check an export document; GroupError `bad_offsets_file` says what is wrong."""

    def bad(why: str) -> GroupError:
        return GroupError("bad_offsets_file", f"not a BOS group offsets file: {why}")

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise bad(f"invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise bad("the top level is not an object")
    if doc.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise bad(f"format is {doc.get('format')!r}")
    if doc.get("version", EXPORT_VERSION) != EXPORT_VERSION:
        raise bad(f"version {doc.get('version')!r} is not supported (expected {EXPORT_VERSION})")
    for key in ("group", "topic"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise bad(f"{key!r} is missing or not a string")
    partitions = doc.get("partitions")
    if not isinstance(partitions, dict):
        raise bad("'partitions' is missing or not an object")
    offsets: dict[int, int] = {}
    for key, value in partitions.items():
        try:
            partition = int(key)
        except (TypeError, ValueError):
            raise bad(f"partition {key!r} is not a number") from None
        if partition < 0 or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"partition {key!r}: offset {value!r} is not a non-negative integer")
        offsets[partition] = value
    return {**doc, "partitions": offsets}


def plan_import(broker: Broker, *, doc: dict[str, Any], group: str | None = None) -> OffsetPlan:
    """The offsets of an export document (`read_export`) set on `group` (default: its own)."""
    target = group or doc["group"]
    topic = doc["topic"]
    offsets: dict[int, int] = doc["partitions"]
    if not offsets:
        raise GroupError("nothing_to_import", f"the file holds no offsets for {topic!r}")
    unknown = sorted(set(offsets) - set(broker.partitions(topic)))
    if unknown:
        raise GroupError("unknown_partition", f"topic {topic!r} has no partition(s) {unknown}")
    description = (
        f"import offsets of {doc['group']!r} exported at {doc.get('exported_at', '?')} into {target!r}"
    )
    return OffsetPlan("import", target, description, tuple(_rows(broker, target, topic, offsets)))


def apply_plan(broker: Broker, plan: OffsetPlan) -> dict[str, dict[int, int]]:
    """Commit the plan's changed offsets; the group's committed offsets read back afterwards.

    Refused (LiveMembers) when the group has live members, whether the check sees them or
    the broker refuses the commit.
    """
    check = broker.live_members(plan.group)
    if check.live:
        raise LiveMembers(plan.group, check.detail)
    if check.live is None:
        logger.warning(
            "group %s: live members cannot be checked (%s); the broker guards the commit",
            plan.group,
            check.detail,
        )
    changes = {TopicPartition(r.topic, r.partition): r.new for r in plan.changes}
    if changes:
        broker.commit(plan.group, changes)
    logger.info("%s: %d partition(s) of group %s changed", plan.action, len(changes), plan.group)
    topics = sorted({r.topic for r in plan.rows})
    result: dict[str, dict[int, int]] = {}
    for topic in topics:
        result[topic] = broker.committed(plan.group, topic).get(topic, {})
    return result


def bar(value: int, top: int, width: int = 20) -> str:
    """A bar of `width` cells for value/top (eighths of a cell), empty for zero."""
    if value <= 0 or top <= 0:
        return ""
    eighths = max(1, math.ceil(min(value / top, 1.0) * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + ("▏▎▍▌▋▊▉"[rest - 1] if rest else "")
