"""Debian's Chromium driven by Playwright, for the dashboard's tests.

Nothing is downloaded at run time: Playwright drives the Chromium that `.ci/run` installs
from Debian's packages (`chromium`). A machine without it fails these tests with a message
saying so, rather than passing them silently."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = Path(os.environ.get("WRENCH_TEST_SCREENSHOTS", REPO / "build" / "screenshots"))


def chromium_path() -> str:
    """Where Chromium is, or a failure that says how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "the dashboard's browser tests need Debian's chromium: `apt-get install chromium` "
            "(.ci/run installs it when it is missing)"
        )
    return found


async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed afterwards."""
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield instance
        finally:
            await instance.close()


async def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot under build/screenshots, kept as the run's artifact."""
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)
    return path


AXE = Path(__file__).with_name("vendor") / "axe.min.js"
SERIOUS = ("serious", "critical")


async def accessibility_violations(page: Page) -> list[dict[str, object]]:
    """axe-core's serious and critical violations on the page as it is now: each with its
    rule, impact, help text and the elements at fault. axe is loaded through the browser's
    debugging protocol, which the page's policy does not govern, so the page is checked
    under its real Content-Security-Policy."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, object]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                rule: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ")),
            }));
        }"""
    )
    return [v for v in found if v["impact"] in SERIOUS]
