"""`manage.py create_api_user <username> --tenant T --role R`: prints the token last."""

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

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            token = api_user_grant(
                username=options["username"], tenant=options["tenant"], role=options["role"]
            )
        except OrchestrationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{options['username']} is {options['role']} of tenant {options['tenant']}; token:")
        self.stdout.write(token.key)
