"""`manage.py bos_bootstrap`: what `make run` does after migrating: the demo pipeline and user."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from bos_project.settings.environment import BOS_HOME, bos_env, flower_login
from orchestrator import audit
from orchestrator.audit import who as actors
from orchestrator.services.users import api_user_grant


class Command(BaseCommand):
    help = "Publish the bundled pipelines and create the demo admin user (printed)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("publish_pipelines", stdout=self.stdout)
        username, tenant = settings.BOS_DEMO_USER, settings.BOS_DEMO_TENANT
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        password_file = BOS_HOME / "admin_password"
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            user = user or user_model(username=username)
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            password_file.write_text(password)
            password_file.chmod(0o600)
        with audit.acting_as(audit.Who(actor=actors.system("bos_bootstrap"))):
            grant = api_user_grant(username=username, tenant=tenant, role="admin")
        self.stdout.write(
            f"admin login: {username} / {password_file.read_text().strip()}  "
            f"(tenant {tenant}, API token {grant.key})"
        )
        flower_user, flower_password = flower_login(bos_env())
        self.stdout.write(f"Flower login: {flower_user} / {flower_password}")
