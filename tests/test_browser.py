"""A real browser (Debian's chromium via Playwright) uses Swagger UI: Authorize, then Try it out (also on the login form)."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from genai_backend.config import Settings
from tests.conftest import PASSWORD
from tests.live_server import live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")

# Without these, chromium keeps calling home and this machine's closed network refuses it.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def log_in_with_try_it_out(page: Any, username: str) -> None:
    """Try it out on the login operation: the urlencoded form is sent and answers a token."""
    block = page.locator(".opblock-post", has=page.locator('[data-path="/api/login/access-token"]')).first
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator('tr[data-property-name="username"] input').fill(username)
    block.locator('tr[data-property-name="password"] input').fill(PASSWORD)
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200"), block.locator(".responses-inner").inner_text()
    assert "access_token" in block.locator(".live-responses-table tbody").first.inner_text()


def test_swagger_ui_authorize_and_try_it_out(settings: Settings, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with live_server(settings) as base:
        username = f"browser_{uuid.uuid4().hex[:8]}"
        resp = requests.post(f"{base}/api/register", json={"username": username, "password": PASSWORD}, timeout=10)
        assert resp.status_code == 200, resp.text
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            try:
                page.goto(f"{base}/", wait_until="networkidle")
                assert page.url.endswith("/docs")
                page.click("button.authorize")
                page.fill("#oauth_username", username)
                page.fill("#oauth_password", PASSWORD)
                page.locator(".auth-btn-wrapper button.authorize").first.click()
                # Swagger UI swaps the button for "Logout" once the password flow got a token.
                page.locator(".auth-btn-wrapper button", has_text="Logout").first.wait_for()
                page.locator(".auth-btn-wrapper button.btn-done").first.click()
                block = page.locator(".opblock-get", has=page.locator('[data-path="/api/agents/"]')).first
                block.locator(".opblock-summary").click()
                block.locator("button.try-out__btn").click()
                block.locator("button.execute").click()
                status = block.locator(".live-responses-table tbody .response-col_status").first
                status.wait_for()
                assert status.inner_text().strip().startswith("200")
                log_in_with_try_it_out(page, username)
            except Exception:
                page.screenshot(path=str(tmp_path / "swagger-failure.png"), full_page=True)
                raise
            finally:
                browser.close()
