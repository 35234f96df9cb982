"""The audit log: who did what, from where, to which object of which tenant, and how it
ended — every operation, append-only (CONTRACT §5 `GET /api/v1/audit/`).

`record()` writes one `AuditRecord` and the same fields as a JSON log line
(`bos.audit`). Who and where come from the acting context (`who.acting_as`, set by the
request middleware for HTTP, by the consumer for Kafka commands, by commands and
beat tasks for themselves) unless the caller names them.

A record written inside a transaction commits or rolls back with it: an operation that
did not happen leaves no `ok` record. Denials and errors are recorded where no
transaction of theirs is open (the API's error handler, the admin's login signal).
"""

from orchestrator.audit.records import Entry, Outcome, record, record_many
from orchestrator.audit.who import Who, acting_as, current_who

__all__ = ["Entry", "Outcome", "Who", "acting_as", "current_who", "record", "record_many"]
