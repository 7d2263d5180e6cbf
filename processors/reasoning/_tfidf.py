"""Words, stems and TF-IDF cosine similarity: the rule reasoner's measure of how close a
task is to a role or a playbook. Pure functions, no dependency beyond the standard library.

Stemming is deliberately crude (a few English suffixes off, a doubled final consonant
collapsed, six letters kept): "researcher", "research" and "researching" meet, and so do
"summary", "summarise" and "summarization". Both sides of a comparison go through it, so
its mistakes cancel out more often than they hurt.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"[a-z][a-z0-9]+")
_SUFFIXES = (
    "ization",
    "isation",
    "ation",
    "ysis",
    "ing",
    "ers",
    "ion",
    "ise",
    "ize",
    "yse",
    "yze",
    "yst",
    "es",
    "ed",
    "er",
    "ly",
    "al",
    "s",
    "e",
    "y",
)
STEM_LENGTH = 6
STOPWORDS = frozenset(
    """a an and any are as at be by can do does for from has have how i in into is it its
    it's of on or our out should so than that the their them then there these this those to
    up use using was we what when where which who will with without would you your all each
    one two me my not no must make""".split()
)

Vector = dict[str, float]


def stem(word: str) -> str:
    """The stem of one lower-case word."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word[:STEM_LENGTH]


def words(text: str) -> list[str]:
    """The content words of ``text``, lower-cased, stopwords left out, in order."""
    return [word for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


def stems(text: str) -> list[str]:
    """The stems of the content words of ``text``, in order (repeats kept: they are tf)."""
    return [stem(word) for word in words(text.replace("_", " ").replace(".", " "))]


def idf(documents: Sequence[Sequence[str]]) -> dict[str, float]:
    """Smoothed inverse document frequency, ``ln((1 + n) / (1 + df)) + 1``: a term in every
    document still weighs 1, and a term in none of them (seen only in a query) is finite."""
    n = len(documents)
    df: Counter[str] = Counter()
    for document in documents:
        df.update(set(document))
    return {term: math.log((1 + n) / (1 + count)) + 1.0 for term, count in df.items()}


def tfidf(document: Sequence[str], weights: Mapping[str, float]) -> Vector:
    """The document's raw term counts times their idf; unknown terms weigh as the rarest."""
    rarest = max(weights.values(), default=1.0)
    return {term: count * weights.get(term, rarest) for term, count in Counter(document).items()}


def cosine(left: Vector, right: Vector) -> float:
    """Cosine similarity of two sparse vectors, 0 when either is empty."""
    dot = sum(weight * right.get(term, 0.0) for term, weight in left.items())
    norms = math.sqrt(sum(w * w for w in left.values())) * math.sqrt(
        sum(w * w for w in right.values())
    )
    return dot / norms if norms else 0.0


def similarities(query: str, documents: Mapping[str, str]) -> dict[str, float]:
    """TF-IDF cosine similarity of ``query`` with each named document, the idf taken over
    the documents and the query together."""
    stemmed = {name: stems(text) for name, text in documents.items()}
    query_stems = stems(query)
    weights = idf([*stemmed.values(), query_stems])
    query_vector = tfidf(query_stems, weights)
    return {
        name: cosine(query_vector, tfidf(document, weights)) for name, document in stemmed.items()
    }
