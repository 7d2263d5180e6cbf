"""Reading a Prometheus exposition in tests: parsed with prometheus_client's own parser, so a
test checks what a Prometheus server would read, not what a regex happens to match."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: str, name: str) -> list[Sample]:
    """The samples called ``name`` (``wrench_events_produced_total``, a histogram's
    ``..._count``) in the exposition ``text``."""
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` with ``labels`` (others may be there), or None."""
    found = [s for s in samples(text, name) if labels.items() <= s.labels.items()]
    assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
    return found[0].value if found else None


async def scrape_until(
    url: str, check: Callable[[str], bool], what: str, timeout_s: float = 45.0
) -> str:
    """GET ``url`` until ``check(text)`` holds; the last exposition. Fails naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    text = ""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    text = response.text
                    if check(text):
                        return text
            except httpx.HTTPError:
                pass  # not listening yet
            assert loop.time() < deadline, f"{what}: not within {timeout_s}s; last:\n{text}"
            await asyncio.sleep(0.3)
