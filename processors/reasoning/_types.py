"""What a reasoning call returns: a typed result, the thoughts behind it, the tokens it cost."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T", bound=BaseModel)


class Thought(BaseModel):
    """One numbered step of sequential thinking; it may revise an earlier one or open a branch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=1, description="Position of this thought, counting from 1.")
    text: str = Field(description="The thought itself.")
    revises: int | None = Field(
        None, ge=1, description="Number of an earlier thought this one corrects, if any."
    )
    branch: str | None = Field(
        None, description="Name of an alternative line of reasoning this thought belongs to."
    )
    next_thought_needed: bool = Field(
        description="Whether another thought is needed before the final answer."
    )


UsageSource = Literal["provider", "estimated"]
"""Where token counts come from: the server's report, or counted here with tiktoken."""


class Usage(BaseModel):
    """The tokens one LLM request cost, and the model that answered.

    Counts follow the OpenAI usage report: ``input_tokens`` holds every prompt token, the
    ``cached_tokens`` read from the provider's prompt cache among them; ``output_tokens``
    holds every completion token, the hidden ``reasoning_tokens`` among them. ``source`` is
    ``provider`` when the server reported the counts and ``estimated`` when they were counted
    here from the request as sent.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    provider: str | None = Field(None, description="Who served the request (the host).")
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_tokens: int = Field(0, ge=0)
    reasoning_tokens: int = Field(0, ge=0)
    source: UsageSource = "provider"

    @property
    def total_tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens


class Reasoned(BaseModel, Generic[T]):
    """A typed result together with the thoughts that led to it and the usage of every call."""

    model_config = ConfigDict(frozen=True)

    result: T
    thoughts: list[Thought] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)
