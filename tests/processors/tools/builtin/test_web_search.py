"""web.search: BM25 over a temporary corpus, and the SearxNG backend against a local server
that speaks its JSON format."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from processors.tools.builtin import (
    CorpusBackend,
    SearchUnavailable,
    SearxngBackend,
    WebSearch,
)
from processors.tools.builtin._web_search import default_corpus
from tests.processors.tools.builtin.local_http import LocalServer
from wrenchai.embedded import free_port
from wrenchai.settings import Settings

KAFKA = """# Kafka notes

Some general words about the project and its history.

## Partitions and offsets

A consumer reads each partition in order and commits its offset, so a restarted consumer
resumes from the committed offset. Partitions are the unit of parallelism.
"""

COOKING = """Pasta needs plenty of salted water. Drain the pasta, keep a cup of the water,
and finish the sauce in the pan. A consumer of pasta is a happy one.
"""

POSTGRES = """Postgres tables
===============

Read models live in Postgres tables; a projector writes them in one transaction with
the consumer offsets.
"""


def _corpus(folder: Path) -> Path:
    (folder / "kafka.md").write_text(KAFKA)
    (folder / "cooking.txt").write_text(COOKING)
    sub = folder / "db"
    sub.mkdir()
    (sub / "postgres.rst").write_text(POSTGRES)
    (folder / "ignored.py").write_text("partition offset consumer " * 50)
    return folder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return _corpus(tmp_path)


@pytest.fixture
def search(corpus: Path) -> WebSearch:
    return WebSearch(Settings(search_corpus=corpus))


async def test_the_best_matching_file_ranks_first(search: WebSearch, corpus: Path) -> None:
    result = await search.call({"query": "partition offsets of a consumer"})
    urls = [item["url"] for item in result["results"]]
    assert urls[0] == (corpus / "kafka.md").resolve().as_uri() + "#partitions-and-offsets"
    assert all(not url.endswith(".py") for url in urls)
    scores = [item["score"] for item in result["results"]]
    assert scores == sorted(scores, reverse=True)


async def test_the_snippet_is_the_passage_with_the_query_terms(search: WebSearch) -> None:
    top = (await search.call({"query": "committed offset"}))["results"][0]
    assert top["title"] == "Kafka notes"
    assert "committed offset" in top["snippet"]
    assert "general words" not in top["snippet"]


async def test_limit_and_no_match(search: WebSearch) -> None:
    assert len((await search.call({"query": "consumer", "limit": 2}))["results"]) == 2
    assert (await search.call({"query": "zebra giraffe"}))["results"] == []
    assert (await search.call({"query": "the of and"}))["results"] == []


async def test_a_changed_corpus_is_indexed_again(search: WebSearch, corpus: Path) -> None:
    assert (await search.call({"query": "zebra"}))["results"] == []
    (corpus / "zoo.md").write_text("# Zoo\n\nThe zebra sleeps standing up.\n")
    found = (await search.call({"query": "zebra"}))["results"]
    assert [Path(item["url"].split("#")[0].removeprefix("file://")).name for item in found] == [
        "zoo.md"
    ]
    zoo = corpus / "zoo.md"
    zoo.write_text("# Zoo\n\nOnly lions here.\n")
    stat = zoo.stat()
    os.utime(zoo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (await search.call({"query": "zebra"}))["results"] == []


async def test_a_missing_corpus_is_empty_and_unhealthy(tmp_path: Path) -> None:
    search = WebSearch(Settings(search_corpus=tmp_path / "nowhere"))
    assert (await search.call({"query": "anything"}))["results"] == []
    health = await search.health()
    assert not health.ok
    assert "WRENCH_SEARCH_CORPUS" in health.detail


async def test_the_default_corpus_is_the_projects_docs() -> None:
    docs = default_corpus()
    assert docs is not None and (docs / "architecture.md").is_file()
    search = WebSearch(Settings())
    assert isinstance(search.backend, CorpusBackend) and search.backend.folder == docs
    health = await search.health()
    assert health.ok and "files" in health.detail
    top = (await search.call({"query": "SSRF guard allow-list", "limit": 1}))["results"]
    assert top and top[0]["url"].startswith("file://")


# ---------------------------------------------------------------------------- SearxNG


async def _searx(request: web.Request) -> web.StreamResponse:
    if request.query.get("format") != "json":
        return web.Response(status=403, text="format not allowed")
    query = request.query["q"]
    return web.json_response(
        {
            "query": query,
            "results": [
                {
                    "title": f"About {query}",
                    "url": "https://example.org/a",
                    "content": f"{query} explained",
                    "score": 2.5,
                },
                {"title": "Second", "url": "https://example.org/b", "content": "more"},
                {"title": "No url"},
            ],
        }
    )


async def _broken(request: web.Request) -> web.StreamResponse:
    return web.Response(status=503, text="down")


async def _forbidden(request: web.Request) -> web.StreamResponse:
    return web.Response(status=403, text="format not allowed")


@pytest.fixture(scope="module")
async def searx() -> AsyncIterator[LocalServer]:
    routes = {"/search": _searx, "/broken/search": _broken, "/closed/search": _forbidden}
    async with LocalServer(routes) as server:  # type: ignore[arg-type]
        yield server


async def test_searxng_results_are_mapped(searx: LocalServer) -> None:
    search = WebSearch(Settings(search_url=searx.url + "/"))
    assert isinstance(search.backend, SearxngBackend)
    result = await search.call({"query": "event sourcing", "limit": 5})
    assert result["results"] == [
        {
            "title": "About event sourcing",
            "url": "https://example.org/a",
            "snippet": "event sourcing explained",
            "score": 2.5,
        },
        {"title": "Second", "url": "https://example.org/b", "snippet": "more"},
    ]
    assert searx.seen[-1].query == {"q": "event sourcing", "format": "json"}
    assert (await search.health()).ok


async def test_searxng_respects_the_limit(searx: LocalServer) -> None:
    search = WebSearch(Settings(search_url=searx.url))
    assert len((await search.call({"query": "x", "limit": 1}))["results"]) == 1


async def test_searxng_down_is_transient_search_unavailable() -> None:
    search = WebSearch(Settings(search_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(SearchUnavailable) as caught:
        await search.call({"query": "anything"})
    assert caught.value.code == "SEARCH_UNAVAILABLE" and caught.value.transient
    assert "WRENCH_SEARCH_URL" in caught.value.message
    assert not (await search.health()).ok


async def test_searxng_errors_say_whether_a_retry_helps(searx: LocalServer) -> None:
    with pytest.raises(SearchUnavailable) as caught:
        await WebSearch(Settings(search_url=searx.url + "/broken")).call({"query": "x"})
    assert caught.value.transient and caught.value.details["status"] == 503
    with pytest.raises(SearchUnavailable, match=r"settings\.yml") as refused:
        await WebSearch(Settings(search_url=searx.url + "/closed")).call({"query": "x"})
    assert not refused.value.transient
