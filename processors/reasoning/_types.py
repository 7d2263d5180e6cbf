"""What a reasoning call returns: a typed result, the thoughts behind it, the tokens it cost."""

from __future__ import annotations

from typing import Generic, TypeVar

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


class Usage(BaseModel):
    """Tokens one LLM request cost, as the provider reported them, and the model that answered."""

    model_config = ConfigDict(frozen=True)

    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class Reasoned(BaseModel, Generic[T]):
    """A typed result together with the thoughts that led to it and the usage of every call."""

    model_config = ConfigDict(frozen=True)

    result: T
    thoughts: list[Thought] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)
