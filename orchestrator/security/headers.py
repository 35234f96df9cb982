"""A Content-Security-Policy on the pages people use: the admin and the dashboard.

Their scripts and styles are BOS's own static files (the dashboard: Chart.js and
dashboard.js, no inline script; the admin: Django's own files), so scripts may come from
this origin only. Inline `style` attributes stay allowed: Django's admin widgets write some.
The API's paths get no CSP: DRF's browsable API has an inline script, and JSON needs none
(`X-Content-Type-Options: nosniff` and `X-Frame-Options: DENY` cover them, from Django's
SecurityMiddleware and XFrameOptionsMiddleware).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGES = ("/admin/", "/dashboard/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.path_info.startswith(PAGES):
            response.setdefault("Content-Security-Policy", CSP)
        return response
