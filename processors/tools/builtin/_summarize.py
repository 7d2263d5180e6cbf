"""text.summarize: an extractive summary by TextRank over TF-IDF cosine similarity.

The text is split into sentences; each becomes a TF-IDF vector of its word stems (the idf
taken over the sentences themselves); the sentences form a graph whose edge weights are
their cosine similarities; PageRank by power iteration (damping 0.85, until the scores move
by less than 1e-9 in total, at most 200 rounds) ranks them. The most central sentences —
those most similar to many others — are kept, shown in their original order. Ties break
towards the earlier sentence, so the same text always gives the same summary.

Pure Python and up to O(n²) in sentences: the first 500 sentences are ranked, which covers a
long report in about a second at worst.
"""

from __future__ import annotations

import math
import re
from typing import Any

from processors.reasoning._tfidf import idf, stems, tfidf
from processors.tools.builtin._base import BuiltinTool
from processors.tools.descriptors import TEXT_SUMMARIZE

DAMPING = 0.85
MAX_SENTENCES = 500
_TOLERANCE = 1e-9
_MAX_ROUNDS = 200
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by
# whitespace and an upper-case letter, a digit or an opening quote; or at a blank line.
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z0-9\"'(\[])|\n\s*\n")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed, empty ones dropped."""
    parts = _BOUNDARY.split(text.strip())
    return [" ".join(part.split()) for part in parts if part and part.strip()]


def similarity_graph(vectors: list[dict[str, float]]) -> list[dict[int, float]]:
    """Cosine similarity of every pair of vectors that shares a term (the others are 0),
    as one sparse row per vector. Pairs are found through an inverted index, so a long text
    of mostly unrelated sentences costs far less than n² comparisons."""
    postings: dict[str, list[tuple[int, float]]] = {}
    for i, vector in enumerate(vectors):
        norm = math.sqrt(sum(w * w for w in vector.values()))
        for term, weight in vector.items():
            postings.setdefault(term, []).append((i, weight / norm))
    rows: list[dict[int, float]] = [{} for _ in vectors]
    for entries in postings.values():
        for a, (i, wi) in enumerate(entries):
            for j, wj in entries[a + 1 :]:
                rows[i][j] = rows[i].get(j, 0.0) + wi * wj
                rows[j][i] = rows[j].get(i, 0.0) + wi * wj
    return rows


def textrank(vectors: list[dict[str, float]]) -> list[float]:
    """PageRank over the cosine-similarity graph of ``vectors``; the scores sum to 1."""
    n = len(vectors)
    if n == 0:
        return []
    rows = similarity_graph(vectors)
    out_sums = [sum(row.values()) for row in rows]
    # What flows into each sentence: from each neighbour, its share of that neighbour's edges.
    incoming: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for j, row in enumerate(rows):
        for i, weight in row.items():
            incoming[i].append((j, weight / out_sums[j]))
    scores = [1.0 / n] * n
    for _ in range(_MAX_ROUNDS):
        # A sentence similar to no other spreads its score evenly (a dangling node).
        dangling = sum(scores[i] for i in range(n) if not out_sums[i]) / n
        new = [
            (1 - DAMPING) / n + DAMPING * (dangling + sum(scores[j] * w for j, w in incoming[i]))
            for i in range(n)
        ]
        moved = sum(abs(a - b) for a, b in zip(new, scores, strict=True))
        scores = new
        if moved < _TOLERANCE:
            break
    return scores


def summarize(text: str, max_sentences: int) -> list[str]:
    """The ``max_sentences`` most central sentences of ``text``, in their original order."""
    found = sentences(text)[:MAX_SENTENCES]
    if len(found) <= max_sentences:
        return found
    stemmed = [stems(sentence) for sentence in found]
    weights = idf(stemmed)
    scores = textrank([tfidf(terms, weights) for terms in stemmed])
    ranked = sorted(range(len(found)), key=lambda i: (-round(scores[i], 12), i))
    return [found[i] for i in sorted(ranked[:max_sentences])]


class TextSummarize(BuiltinTool):
    """Extractive summary by sentence ranking; no LLM, no network."""

    spec = TEXT_SUMMARIZE

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        chosen = summarize(tool_input["text"], int(tool_input["max_sentences"]))
        return {"summary": " ".join(chosen), "sentences": chosen}

    async def _probe(self) -> tuple[bool, str]:
        text = (
            "Kafka keeps the log. The log holds every event of every task. "
            "Cats sleep a lot. Every task is replayed from the log."
        )
        chosen = summarize(text, 1)
        ok = len(chosen) == 1 and "log" in chosen[0]
        return ok, "TextRank ranks a known text as expected" if ok else f"unexpected: {chosen}"
