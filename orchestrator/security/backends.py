"""The authentication backend that refuses locked-out logins (django-axes), first in
AUTHENTICATION_BACKENDS.

axes' backend needs the request (the client address is half of what it locks). An
`authenticate()` without one (a management command, the test client's `login()`) has no
address to lock and is not an HTTP login: it is passed to the next backend unchecked
instead of failing. Every HTTP login (the admin's form, the dashboard's) carries its request.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):  # type: ignore[misc]  # axes is untyped
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)  # type: ignore[no-any-return]
