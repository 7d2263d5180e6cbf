"""text.summarize: TextRank picks the central sentences, deterministically, in order."""

from __future__ import annotations

import pytest

from processors.tools.builtin import TextSummarize
from processors.tools.builtin._summarize import sentences, summarize, textrank

# Four sentences about the event log, which share words with each other, and three
# unrelated asides that share nothing: the summary must be made of the former.
TEXT = (
    "The event log records every task as immutable events. "
    "My neighbour grows tomatoes in the garden. "
    "Replaying the event log rebuilds every task from its events. "
    "Projections fold the events of the log into read models for every task. "
    "Bicycles were popular in Amsterdam last summer. "
    "The log keeps events forever, so every task can be audited. "
    "Jazz concerts start late on Fridays."
)
ASIDES = ("tomatoes", "Bicycles", "Jazz")


@pytest.fixture(scope="module")
def summarizer() -> TextSummarize:
    return TextSummarize()


async def test_picks_the_central_sentences_in_their_original_order(
    summarizer: TextSummarize,
) -> None:
    result = await summarizer.call({"text": TEXT, "max_sentences": 3})
    chosen = result["sentences"]
    assert len(chosen) == 3
    assert not any(word in sentence for sentence in chosen for word in ASIDES)
    order = sentences(TEXT)
    assert [order.index(s) for s in chosen] == sorted(order.index(s) for s in chosen)
    assert result["summary"] == " ".join(chosen)


async def test_is_deterministic(summarizer: TextSummarize) -> None:
    runs = [await summarizer.call({"text": TEXT, "max_sentences": 2}) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


async def test_a_short_text_is_its_own_summary(summarizer: TextSummarize) -> None:
    result = await summarizer.call({"text": "One sentence only. And a second one!"})
    assert result["sentences"] == ["One sentence only.", "And a second one!"]


def test_sentences_split_at_ends_and_blank_lines_only() -> None:
    text = (
        'He said "stop." Then he left.\n\n'
        "A new paragraph without a stop\nstill one. Version 1.2 is out, e.g. today."
    )
    assert sentences(text) == [
        'He said "stop."',
        "Then he left.",
        "A new paragraph without a stop still one.",
        "Version 1.2 is out, e.g. today.",
    ]


def test_textrank_scores_sum_to_one_and_favour_the_hub() -> None:
    hub = {"a": 1.0, "b": 1.0, "c": 1.0}
    vectors = [hub, {"a": 1.0}, {"b": 1.0}, {"c": 1.0}, {"z": 1.0}]
    scores = textrank(vectors)
    assert sum(scores) == pytest.approx(1.0)
    assert scores.index(max(scores)) == 0
    assert scores[4] == min(scores), "a sentence similar to none is least central"


def test_summarize_keeps_ties_stable() -> None:
    text = "Alpha beta. Alpha beta. Alpha beta."
    assert summarize(text, 1) == ["Alpha beta."]


async def test_health_checks_a_known_text(summarizer: TextSummarize) -> None:
    health = await summarizer.health()
    assert health.ok and "TextRank" in health.detail
