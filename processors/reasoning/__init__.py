"""The reasoning layer: one protocol, an LLM over the OpenAI-compatible API, an offline reasoner.

Every reasoning call returns a :class:`Reasoned` result: the typed answer, the numbered
:class:`Thought` s that led to it and the :class:`Usage` of every LLM request it made.
:class:`Reasoner` is what the agents call; :class:`RuleReasoner` answers offline and
deterministically, :class:`LLMReasoner` asks a model through an :class:`LLMClient`.
"""

from processors.reasoning._errors import (
    LLMInvalidOutput,
    LLMNotConfigured,
    LLMUnavailable,
    ReasoningError,
)
from processors.reasoning._llm import LLMClient, OnThought
from processors.reasoning._llm_reasoner import LLMReasoner
from processors.reasoning._protocol import (
    ERROR_CATEGORIES,
    CriterionFinding,
    ErrorAnalysis,
    ErrorCategory,
    Evaluation,
    PlanProposal,
    Reasoner,
    RoleProposal,
    RoleScore,
    TaskBrief,
    proposed_playbook,
)
from processors.reasoning._rule import RuleReasoner, check_output
from processors.reasoning._types import Reasoned, Thought, Usage

# Checked by mypy: both reasoners implement the whole protocol, with its signatures.
_IMPLEMENTATIONS: tuple[type[Reasoner], ...] = (RuleReasoner, LLMReasoner)

__all__ = [
    "ERROR_CATEGORIES",
    "CriterionFinding",
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
