"""Management commands that read or change tenant data act as someone, and say so.

`AuditedCommand` gives a command `--as-user USERNAME`: it then acts as `user:USERNAME` (the
user must exist and be active) and `require()` checks that user's role in each tenant it
touches, as the API would. Without it the command acts as the named system actor
`system:<command>`: whoever can run `manage.py` holds the database's credentials, so a
role check would protect nothing, but the audit log still says who acted. The actor is
printed on stderr before the command runs, and the run is one audit record
`command.<name>` (outcome `ok`, `denied` or `error`) with its options; the operations it
performs (a configuration change, a batch restored from a snapshot) are recorded by
their services as well.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from orchestrator import access, audit
from orchestrator.access import Do, User
from orchestrator.audit.who import system
from orchestrator.audit.who import user as user_actor

# Option values never written to the audit log.
SECRET_OPTIONS = {"password", "token", "key", "keys"}
QUIET_OPTIONS = {
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
    "stdout",
    "stderr",
}


def _loggable(options: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        for key, value in options.items()
        if key not in QUIET_OPTIONS and key not in SECRET_OPTIONS
    }


def _add_as_user(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--as-user",
        dest="as_user",
        default=default,
        metavar="USERNAME",
        help="act as this user (their roles are checked; actor user:USERNAME); default: the system "
        "actor system:<command>",
    )


class AuditedCommand(BaseCommand):
    acting_user: User | None = None
    actor: str = ""

    @property
    def command_name(self) -> str:
        return type(self).__module__.rsplit(".", 1)[-1]

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        _add_as_user(parser, default="")
        # Also after a sub-command (`bos_snapshot rewind ID --as-user ann`); SUPPRESS keeps a
        # value given before it.
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    _add_as_user(sub, default=argparse.SUPPRESS)
        return parser

    def execute(self, *args: Any, **options: Any) -> Any:
        if options.get("stderr"):
            self.stderr = OutputWrapper(options["stderr"])
        username = options.get("as_user") or ""
        if username:
            found = get_user_model().objects.filter(username=username, is_active=True).first()
            if found is None:
                raise CommandError(f"--as-user: no active user {username!r}")
            self.acting_user, self.actor = found, user_actor(username)
        else:
            self.acting_user, self.actor = None, system(self.command_name)
        self.stderr.write(f"acting as {self.actor}")
        with audit.acting_as(audit.Who(actor=self.actor)):
            try:
                result = super().execute(*args, **options)
            except CommandError as exc:
                outcome = audit.Outcome.DENIED if getattr(exc, "denied", False) else audit.Outcome.ERROR
                self._record(outcome, options, error=str(exc))
                raise
            except Exception as exc:
                self._record(audit.Outcome.ERROR, options, error=f"{type(exc).__name__}: {exc}")
                raise
            self._record(audit.Outcome.OK, options)
        return result

    def _record(self, outcome: audit.Outcome, options: dict[str, Any], error: str = "") -> None:
        detail: dict[str, Any] = {"options": _loggable(options)}
        if error:
            detail["error"] = error[:1000]
        audit.record(f"command.{self.command_name}", outcome=outcome, object_type="command", detail=detail)

    def require(self, do: Do, tenant_id: int | None) -> None:
        """Refuse (CommandError, audited `denied`) when the acting user may not `do` there."""
        if self.acting_user is None or access.may(self.acting_user, do, tenant_id):
            return
        exc = CommandError(f"{self.actor} may not do this in tenant id {tenant_id} (needs {do.name.lower()})")
        exc.denied = True  # type: ignore[attr-defined]
        raise exc

    def readable_tenants(self) -> list[int] | None:
        """The tenants the acting user may read (None: every tenant)."""
        return None if self.acting_user is None else access.tenant_ids(self.acting_user)

    def require_platform(self) -> None:
        """Refuse a named user who is not a superuser: this command changes what belongs to no tenant."""
        if self.acting_user is None or access.is_superuser(self.acting_user):
            return
        exc = CommandError(f"{self.actor} may not do this: it needs a superuser")
        exc.denied = True  # type: ignore[attr-defined]
        raise exc
