"""The dashboard's tests' fixtures: a headless Chromium and the API served on a real port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.api._streams_support import live_api
from tests.api.ui.browser import browser
from wrenchai.settings import Settings


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async for instance in browser():
        yield instance


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[str]:
    async with live_api(settings) as base:
        yield base
