#!/usr/bin/env python
"""Django's command-line utility for BOS."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["scoring_service"]:
        # The demo's scoring service needs nothing of Django: start it without a second of set-up.
        from orchestrator.service_clients.scoring_service import main as scoring_service

        sys.exit(scoring_service(sys.argv[2:]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bos_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
