"""`manage.py pipeline_split <pipeline> 3:70 4:30` (or `--clear`): A/B split new batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from orchestrator.errors import OrchestrationError
from orchestrator.management.audited import AuditedCommand
from orchestrator.services.pipelines import pipeline_set_split


class Command(AuditedCommand):
    help = "Split new batches of a pipeline between versions by weight (sticky by external id)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("pipeline")
        parser.add_argument("parts", nargs="*", help="VERSION:WEIGHT, e.g. 3:70 4:30")
        parser.add_argument(
            "--clear", action="store_true", help="end the split: new batches get the active version"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.require_platform()
        if options["clear"] == bool(options["parts"]):
            raise CommandError("give VERSION:WEIGHT parts, or --clear")
        split = []
        for part in options["parts"]:
            version, _, weight = part.partition(":")
            if not (version.isdigit() and weight.isdigit()):
                raise CommandError(f"{part!r}: expected VERSION:WEIGHT, e.g. 3:70")
            split.append({"version": int(version), "weight": int(weight)})
        try:
            pipeline = pipeline_set_split(name=options["pipeline"], split=split)
        except OrchestrationError as exc:
            raise CommandError(exc.message) from exc
        if not pipeline.split:
            self.stdout.write(f"{pipeline.name}: no split; new batches get the active version")
            return
        total = sum(p["weight"] for p in pipeline.split)
        shares = ", ".join(f"v{p['version']} {100 * p['weight'] / total:.0f}%" for p in pipeline.split)
        self.stdout.write(f"{pipeline.name}: {shares}")
