#!/usr/bin/env bash
# What `make run` runs once the services are up: migrate, load the demo pipeline and
# admin user, print the URLs, then every process of the Procfile under honcho.
set -euo pipefail
cd "$(dirname "$0")/.."
python manage.py migrate --no-input -v 0
python manage.py bos_bootstrap
port="${BOS_HTTP_PORT:-8000}"
cat <<MSG

  BOS is starting (Ctrl-C stops everything):
    API        http://127.0.0.1:${port}/api/v1/
    API docs   http://127.0.0.1:${port}/api/docs/
    admin      http://127.0.0.1:${port}/admin/
    dashboard  http://127.0.0.1:${port}/dashboard/
    health     http://127.0.0.1:${port}/readyz   metrics http://127.0.0.1:${port}/metrics
    Flower     http://127.0.0.1:${BOS_FLOWER_PORT:-5555}/
  In another shell: make demo

MSG
exec honcho start
