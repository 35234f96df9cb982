"""`manage.py create_api_user <username> --tenant T --role R [--password P]`: prints the token last.

With `--password` the user may also log in to the admin, where they see their tenants'
objects only and may do what their role allows (`orchestrator.access`).

Every run issues a new token (tokens are stored hashed: an old one cannot be shown again);
earlier tokens stay valid until they expire (BOS_API_TOKEN_TTL_DAYS) or are revoked with
`revoke_api_tokens`. Audited as `system:create_api_user`.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from orchestrator import audit
from orchestrator.audit import who as actors
from orchestrator.errors import OrchestrationError
from orchestrator.models import Membership
from orchestrator.services.users import api_user_grant


class Command(BaseCommand):
    help = "Create an API user (or add a tenant membership) and print the user's token."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--role", required=True, choices=Membership.Role.values)
        parser.add_argument("--password", help="also let the user log in to the admin, with this password")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with audit.acting_as(audit.Who(actor=actors.system("create_api_user"))):
                grant = api_user_grant(
                    username=options["username"],
                    tenant=options["tenant"],
                    role=options["role"],
                    password=options["password"],
                )
        except OrchestrationError as exc:
            raise CommandError(exc.message) from exc
        login = "; may log in to the admin" if options["password"] is not None else ""
        until = f"{grant.expiry:%Y-%m-%d %H:%M} UTC" if grant.expiry else "revoked"
        self.stdout.write(
            f"{options['username']} is {options['role']} of tenant {options['tenant']}{login}; "
            f"a new token, valid until {until} (shown only now):"
        )
        self.stdout.write(grant.key)
