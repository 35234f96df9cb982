"""`manage.py revoke_api_tokens <username>`: delete every API token of a user (audited `token.revoke`).

The user and their memberships stay; `create_api_user` issues a new token. Acts as
`system:revoke_api_tokens`, or as a superuser named by `--as-user`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from orchestrator.management.audited import AuditedCommand
from orchestrator.security import tokens


class Command(AuditedCommand):
    help = "Revoke (delete) every API token of a user."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        revoked = tokens.revoke(user)
        self.stdout.write(f"revoked {revoked} token(s) of {user.get_username()}")
