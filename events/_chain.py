"""The archive's signed chain heads, on ``wrench.admin`` (tenant ``_system``).

Every few records or seconds the projector signs the head of each partition's hash chain
(topic, partition, offset, hash, chain_version, signed_at) and publishes the signatures as one
chain.checkpoint. A copy of the checkpoints outside the database is what lets an auditor tell
a rewritten archive from the real one (docs/audit.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from events._catalog import event
from events._envelope import EventPayload

SignatureAlgorithm = Literal["ed25519", "hmac-sha256"]


class SignedHead(BaseModel):
    """One partition's chain head as signed: the record at ``offset`` has ``hash``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1, max_length=300)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The record's chain hash, hex.")
    chain_version: int = Field(ge=1)
    signed_at: AwareDatetime
    algorithm: SignatureAlgorithm
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="Which key signed (a fingerprint, not the key)."
    )
    signature: str = Field(
        min_length=1, max_length=200, description="The signature, base64 (docs/audit.md)."
    )


@event("chain.checkpoint", version=1)
class ChainCheckpoint(EventPayload):
    """The projector signed the head of the archive's hash chain in each partition that moved
    since the last checkpoint."""

    heads: list[SignedHead] = Field(min_length=1, max_length=10_000)
