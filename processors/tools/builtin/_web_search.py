"""web.search: ranked search with snippets, from a local corpus or a SearxNG-compatible API.

Two backends behind one :class:`SearchBackend` protocol. :class:`SearxngBackend` asks a
SearxNG instance (``GET {search_url}/search?q=…&format=json``) when WRENCH_SEARCH_URL is
set. Otherwise :class:`CorpusBackend` ranks the ``.md``, ``.txt`` and ``.rst`` files of a
folder with BM25 (Okapi, k1 = 1.5, b = 0.75), offline.

The corpus index is built on first use and rebuilt when a file is added, removed or
changed (the folder's names, sizes and modification times are its fingerprint, checked on
every search: a stat per file, cheap for documentation-sized folders). A file is split into
passages (a heading, or a paragraph of at most ~120 words); files are ranked by BM25 over
their whole text, and the snippet of each is its best passage by the same BM25 weights,
cut around the first query term. The result's URL is the file's ``file://`` URL, with a
``#anchor`` of the heading above the snippet for markdown files (GitHub's slug rules).

BM25 is written out here (forty lines over the standard library) rather than taken from
``bm25s``: that package brings numpy and scipy, and ranks whole documents only, while the
snippets need the same weights per passage.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from processors.reasoning._tfidf import stems
from processors.tools.builtin._base import BuiltinTool, SearchUnavailable, ToolTimeout
from processors.tools.descriptors import WEB_SEARCH
from wrenchai.settings import Settings

SUFFIXES = frozenset({".md", ".txt", ".rst"})
K1, B = 1.5, 0.75
_SNIPPET_CHARS = 240
_PASSAGE_WORDS = 120
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


class SearchBackend(Protocol):
    """Where web.search looks. ``search`` returns result dicts of the output schema."""

    async def search(self, query: str, limit: int) -> list[dict[str, Any]]: ...

    async def probe(self) -> tuple[bool, str]: ...


# ---------------------------------------------------------------------------- SearxNG


class SearxngBackend:
    """A SearxNG instance (or anything that answers its JSON format)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + "/search"
        self.timeout_s = timeout_s

    async def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        payload = await self._get({"q": query, "format": "json"})
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise SearchUnavailable(
                f"{self.url} did not answer in SearxNG's JSON format (no results list).",
                url=self.url,
                transient=False,
            )
        mapped = []
        for item in results[:limit]:
            if not isinstance(item, dict) or not item.get("url"):
                continue
            result: dict[str, Any] = {
                "title": str(item.get("title") or item["url"]),
                "url": str(item["url"]),
                "snippet": str(item.get("content") or ""),
            }
            if isinstance(item.get("score"), int | float):
                result["score"] = float(item["score"])
            mapped.append(result)
        return mapped

    async def probe(self) -> tuple[bool, str]:
        await self._get({"q": "wrenchai", "format": "json"})
        return True, f"SearxNG at {self.url} answers"

    async def _get(self, params: dict[str, str]) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(self.url, params=params)
        except httpx.TimeoutException as exc:
            raise ToolTimeout(
                f"{self.url} did not answer within {self.timeout_s:g}s.", url=self.url
            ) from exc
        except httpx.HTTPError as exc:
            raise SearchUnavailable(
                f"Cannot reach the search API at {self.url} ({type(exc).__name__}); check "
                "that it is up, or unset WRENCH_SEARCH_URL to search the local corpus.",
                url=self.url,
            ) from exc
        if response.status_code == 403:
            raise SearchUnavailable(
                f"{self.url} refused the JSON format (HTTP 403); enable it in SearxNG's "
                "settings.yml (search.formats: [html, json]).",
                url=self.url,
                status=403,
                transient=False,
            )
        if response.status_code != 200:
            raise SearchUnavailable(
                f"{self.url} answered HTTP {response.status_code}.",
                url=self.url,
                status=response.status_code,
                transient=response.status_code == 429 or response.status_code >= 500,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise SearchUnavailable(
                f"{self.url} answered something that is not JSON.", url=self.url, transient=False
            ) from exc


# ---------------------------------------------------------------------------- the corpus


@dataclass
class _Passage:
    text: str
    anchor: str | None
    terms: Counter[str]


@dataclass
class _Document:
    path: Path
    title: str
    terms: Counter[str]
    length: int
    passages: list[_Passage] = field(default_factory=list)


@dataclass
class _Index:
    documents: list[_Document]
    idf: dict[str, float]
    average_length: float

    @classmethod
    def build(cls, documents: list[_Document]) -> _Index:
        df: Counter[str] = Counter()
        for document in documents:
            df.update(document.terms.keys())
        n = len(documents)
        # The "plus one" variant of BM25's idf: never negative, even for a term in every file.
        idf = {term: math.log(1 + (n - count + 0.5) / (count + 0.5)) for term, count in df.items()}
        average = sum(d.length for d in documents) / n if n else 0.0
        return cls(documents, idf, average)

    def score(self, query: Iterable[str], terms: Counter[str], length: int) -> float:
        """BM25 of one bag of terms against the query terms."""
        norm = K1 * (1 - B + B * length / self.average_length) if self.average_length else K1
        total = 0.0
        for term in query:
            tf = terms.get(term, 0)
            if tf:
                total += self.idf.get(term, 0.0) * tf * (K1 + 1) / (tf + norm)
        return total


class CorpusBackend:
    """BM25 over the text files of one folder (``None``: an empty corpus)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._index: _Index | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None
        self._lock = asyncio.Lock()

    async def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        index = await self._current()
        terms = list(dict.fromkeys(stems(query)))
        if not terms or not index.documents:
            return []
        scored = [
            (index.score(terms, doc.terms, doc.length), i, doc)
            for i, doc in enumerate(index.documents)
        ]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
        return [_result(index, terms, doc, score, query) for score, _, doc in ranked[:limit]]

    async def probe(self) -> tuple[bool, str]:
        if self.folder is None or not self.folder.is_dir():
            return False, (
                f"no corpus: {self.folder or 'the docs/ folder'} does not exist here (an "
                "installed package carries no docs/); set WRENCH_SEARCH_CORPUS to a folder "
                "of .md/.txt/.rst files, or WRENCH_SEARCH_URL to a SearxNG instance"
            )
        index = await self._current()
        return bool(index.documents), f"corpus {self.folder}: {len(index.documents)} files"

    async def _current(self) -> _Index:
        async with self._lock:
            fingerprint = await asyncio.to_thread(self._fingerprint_now)
            if self._index is None or fingerprint != self._fingerprint:
                self._index = await asyncio.to_thread(self._build, fingerprint)
                self._fingerprint = fingerprint
            return self._index

    def _files(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*") if p.suffix in SUFFIXES and p.is_file())

    def _fingerprint_now(self) -> tuple[tuple[str, int, int], ...]:
        stats = []
        for path in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(stats)

    def _build(self, fingerprint: tuple[tuple[str, int, int], ...]) -> _Index:
        documents = []
        for name, _, _ in fingerprint:
            path = Path(name)
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            documents.append(_document(path, text))
        return _Index.build(documents)


def _document(path: Path, text: str) -> _Document:
    passages = [
        _Passage(body, anchor, Counter(stems(body))) for body, anchor in _passages(path, text)
    ]
    terms: Counter[str] = Counter()
    for passage in passages:
        terms.update(passage.terms)
    title = next((m.group(2) for m in map(_HEADING.match, text.splitlines()) if m), path.stem)
    return _Document(path, title, terms, sum(terms.values()), passages)


def _passages(path: Path, text: str) -> Iterable[tuple[str, str | None]]:
    """Paragraphs (long ones split by words), each with the anchor of its heading."""
    markdown = path.suffix == ".md"
    anchor: str | None = None
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        heading = _HEADING.match(block.splitlines()[0]) if markdown else None
        if heading is not None:
            anchor = _slug(heading.group(2))
        words = block.split()
        for start in range(0, len(words), _PASSAGE_WORDS):
            yield " ".join(words[start : start + _PASSAGE_WORDS]), anchor


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _result(
    index: _Index, terms: list[str], doc: _Document, score: float, query: str
) -> dict[str, Any]:
    best = max(
        doc.passages,
        key=lambda p: index.score(terms, p.terms, sum(p.terms.values())),
        default=None,
    )
    url = doc.path.resolve().as_uri()
    if best is not None and best.anchor:
        url += f"#{best.anchor}"
    snippet = _window(best.text, query) if best is not None else ""
    return {"title": doc.title, "url": url, "snippet": snippet, "score": round(score, 6)}


def _window(text: str, query: str) -> str:
    """About 240 characters of ``text`` around the first word that matches the query."""
    if len(text) <= _SNIPPET_CHARS:
        return text
    wanted = set(stems(query))
    position = 0
    for match in re.finditer(r"\w+", text):
        if set(stems(match.group())) & wanted:
            position = match.start()
            break
    start = max(0, position - _SNIPPET_CHARS // 3)
    # Start and end on word boundaries, and say where text was cut.
    if start:
        start = text.find(" ", start) + 1 or start
    end = min(len(text), start + _SNIPPET_CHARS)
    if end < len(text):
        end = text.rfind(" ", start, end) if text.rfind(" ", start, end) > start else end
    return ("…" if start else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def default_corpus() -> Path | None:
    """The project's docs/ folder, found from the source tree; None when not there (a
    wheel installs the packages only)."""
    docs = Path(__file__).resolve().parents[3] / "docs"
    return docs if docs.is_dir() else None


class WebSearch(BuiltinTool):
    """web.search over the configured backend."""

    spec = WEB_SEARCH

    def __init__(self, settings: Settings, backend: SearchBackend | None = None) -> None:
        super().__init__(max_result_bytes=settings.max_event_bytes)
        if backend is None:
            if settings.search_url:
                backend = SearxngBackend(settings.search_url, settings.fetch_timeout_s)
            else:
                backend = CorpusBackend(settings.search_corpus or default_corpus())
        self.backend = backend

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        results = await self.backend.search(tool_input["query"], int(tool_input["limit"]))
        return {"results": results}

    async def _probe(self) -> tuple[bool, str]:
        return await self.backend.probe()
