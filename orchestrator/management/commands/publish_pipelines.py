"""`manage.py publish_pipelines [files...]`: publishes pipeline definitions (default: pipelines/*.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from bos_project.settings.environment import BASE_DIR
from orchestrator.errors import OrchestrationError
from orchestrator.management.audited import AuditedCommand
from orchestrator.services.pipelines import pipeline_publish_file


class Command(AuditedCommand):
    help = "Validate and publish pipeline definitions; an unchanged definition is a no-op."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("files", nargs="*", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        files = options["files"] or sorted((BASE_DIR / "pipelines").glob("*.json"))
        for path in files:
            try:
                result = pipeline_publish_file(path)
            except OrchestrationError as exc:
                raise CommandError(f"{path}: {exc.message}") from exc
            version = result.version
            state = "published" if result.created else "unchanged"
            self.stdout.write(f"{version.pipeline.name} v{version.version}: {state}")
