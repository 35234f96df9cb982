"""`manage.py create_api_user <username> --tenant T --role R [--password P]`: prints the token last.

With `--password` the user may also log in to the admin, where they see their tenants'
objects only and may do what their role allows (`orchestrator.access`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

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
            token = api_user_grant(
                username=options["username"],
                tenant=options["tenant"],
                role=options["role"],
                password=options["password"],
            )
        except OrchestrationError as exc:
            raise CommandError(exc.message) from exc
        login = "; may log in to the admin" if options["password"] is not None else ""
        self.stdout.write(
            f"{options['username']} is {options['role']} of tenant {options['tenant']}{login}; token:"
        )
        self.stdout.write(token.key)
