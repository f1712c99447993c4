"""The API docs page works offline: Swagger UI's assets come from the installed package, and a
browser that may reach nothing but 127.0.0.1 sees the operations listed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from support.api import api_client

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Route


def test_api_docs_render_without_internet(browser: Browser, tmp_path: Path) -> None:
    with api_client(f"sqlite:///{tmp_path / 'docs.db'}") as api:
        context = browser.new_context()
        page = context.new_page()
        refused: list[str] = []

        def only_loopback(route: Route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:  # what an installation without internet access would see
                refused.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        try:
            page.goto(f"{api.base_url}/api/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            context.close()
    assert refused == [], refused
    assert any(p.replace("\u200b", "") == "/api/lists" for p in paths), paths[:10]
    assert len(paths) >= 40, len(paths)
