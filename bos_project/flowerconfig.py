"""Flower's configuration file (`celery -A bos_project flower --conf=bos_project/flowerconfig.py`).

Flower always asks for a login: its pages show every task's arguments, which name
batches and tenants. The credentials come from `BOS_FLOWER_USER`/`BOS_FLOWER_PASSWORD`
(or the development password generated into `.bos/flower_password`); read here rather
than passed on the command line, so they never show in the process list.
"""

from __future__ import annotations

from bos_project.settings.environment import bos_env, flower_login

_user, _password = flower_login(bos_env())
basic_auth = [f"{_user}:{_password}"]
