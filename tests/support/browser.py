"""Headless Chromium for page tests: Debian's `chromium` (installed by `make browsers`)
driven by Python playwright with `executable_path`, so no browser is downloaded.

`BrowserPage` wraps a playwright page and keeps what a test must check on every page:
console errors, uncaught page errors and failed requests. Screenshots go under
`$BOS_HOME/artifacts/screenshots/` (CI keeps `.bos/artifacts/`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bos_project.settings.environment import BOS_HOME

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# The flags a sandboxed, offline machine needs: no GPU, no background calls to Google.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOT_DIR = BOS_HOME / "artifacts" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}


def chromium_path() -> str:
    """Where Chromium is: `BOS_CHROMIUM` if set, else the first Debian path that exists."""
    configured = os.environ.get("BOS_CHROMIUM")
    if configured:
        return configured
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise RuntimeError("no Chromium found: run `make browsers` (Debian package chromium)")


@dataclass
class BrowserPage:
    """A page plus everything that went wrong on it."""

    page: Any
    base_url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def attach(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on(
            "requestfailed", lambda request: self.failed_requests.append(f"{request.method} {request.url}")
        )
        self.page.on("response", self._on_response)

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_response(self, response: Any) -> None:
        if response.status >= 400 and response.url.startswith(self.base_url):
            self.failed_requests.append(f"{response.status} {response.url}")

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base_url + path, wait_until="networkidle")

    def login(self, username: str, password: str, *, next_path: str = "/admin/") -> None:
        """Log in through the admin's own form (the dashboard uses the admin's login)."""
        self.goto(f"/admin/login/?next={next_path}")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation(wait_until="networkidle"):
            self.page.click("input[type=submit]")

    def problems(self) -> list[str]:
        """Console errors, page errors and failed requests seen so far (none is good)."""
        return [*self.console_errors, *self.page_errors, *self.failed_requests]

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path
