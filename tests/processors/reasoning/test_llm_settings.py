"""The LLM settings and the reasoning layer's public names."""

from __future__ import annotations

from pathlib import Path

import pytest

import processors.reasoning
from wrenchai.settings import Settings


def test_without_a_base_url_no_llm_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default no LLM is configured (the offline reasoner decides) and 8 thoughts is the
    budget."""
    for name in ("BASE_URL", "API_KEY", "API_KEY_FILE", "MAX_THOUGHTS"):
        monkeypatch.delenv(f"WRENCH_LLM_{name}", raising=False)
    settings = Settings()
    assert settings.llm_base_url is None
    assert settings.llm_api_key is None
    assert settings.llm_max_thoughts == 8


def test_models_are_the_model_then_each_fallback_once() -> None:
    """llm_models(): the configured model first, then the comma-separated fallbacks, trimmed,
    without blanks or repeats."""
    settings = Settings(llm_model="big", llm_fallback_models=" small, ,big,tiny ,small")
    assert settings.llm_models() == ["big", "small", "tiny"]
    assert Settings(llm_model="only").llm_models() == ["only"]


def test_api_key_comes_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """WRENCH_LLM_API_KEY_FILE names a file holding the key; the variable itself wins."""
    secret = tmp_path / "llm.key"
    secret.write_text("sk-from-file\n")
    monkeypatch.delenv("WRENCH_LLM_API_KEY", raising=False)
    monkeypatch.setenv("WRENCH_LLM_API_KEY_FILE", str(secret))
    key = Settings().llm_api_key
    assert key is not None and key.get_secret_value() == "sk-from-file"
    monkeypatch.setenv("WRENCH_LLM_API_KEY", "sk-from-env")
    key = Settings().llm_api_key
    assert key is not None and key.get_secret_value() == "sk-from-env"


def test_api_key_is_never_shown() -> None:
    """The key is a secret: its repr and the settings' repr do not contain it."""
    settings = Settings(llm_api_key="sk-hidden")
    assert "sk-hidden" not in repr(settings)


def test_public_names_of_the_reasoning_layer_are_pinned() -> None:
    """processors.reasoning exports a curated set of names; changing it is a decision."""
    assert sorted(processors.reasoning.__all__) == [
        "CriterionFinding",
        "ERROR_CATEGORIES",
        "ErrorAnalysis",
        "ErrorCategory",
        "Evaluation",
        "LLMClient",
        "LLMInvalidOutput",
        "LLMNotConfigured",
        "LLMReasoner",
        "LLMUnavailable",
        "OnThought",
        "PlanProposal",
        "Reasoned",
        "Reasoner",
        "ReasoningError",
        "RoleProposal",
        "RoleScore",
        "RuleReasoner",
        "TaskBrief",
        "Thought",
        "Usage",
        "check_output",
        "proposed_playbook",
    ]
    for name in processors.reasoning.__all__:
        assert hasattr(processors.reasoning, name)
