"""`manage.py config_docs [--check]`: write docs/configuration.md from the declarations
(orchestrator/config/registry.py); `--check` exits non-zero when the file is stale."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from bos_project.settings.environment import BASE_DIR
from orchestrator.config.docs import render

PATH = "docs/configuration.md"


class Command(BaseCommand):
    help = "Write docs/configuration.md from the settings' declarations (--check: fail when stale)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="exit non-zero when the file is stale")

    def handle(self, *args: Any, **options: Any) -> None:
        path = BASE_DIR / PATH
        text = render()
        current = path.read_text() if path.exists() else ""
        if options["check"]:
            if current != text:
                raise CommandError(f"{PATH} is stale: run `python manage.py config_docs`")
            self.stdout.write(f"{PATH} is current")
            return
        path.write_text(text)
        self.stdout.write(f"wrote {PATH}")
