"""The logs the projector folds: wrench.events into the task read models, wrench.admin into
the identity read models and agent status. Each has its own consumer group and its own
stored offsets, and both are archived in event_log (hash-chained per topic and partition)."""

from __future__ import annotations

from dataclasses import dataclass

from projections._cost_models import COST_READ_MODELS
from projections._identity_models import ADMIN_READ_MODELS
from projections._read_model_types import ReadModel
from projections._read_models import READ_MODELS
from projections._runtime_models import RUNTIME_READ_MODELS
from projections._shredding import ShreddingModel
from wrenchai.settings import Settings


@dataclass(frozen=True)
class Stream:
    """One topic, the consumer group that projects it and the read models it feeds."""

    name: str
    group_name: str
    models: tuple[ReadModel, ...]

    def topic(self, settings: Settings) -> str:
        """The topic's full name under the settings' namespace."""
        return settings.topic(self.name)

    def group(self, settings: Settings) -> str:
        """The projector's consumer group for this topic."""
        return settings.group(self.group_name)


EVENTS = Stream("events", "projector", READ_MODELS)
# Shredding last: it clears what the models before it (and those of wrench.events) hold.
ADMIN = Stream(
    "admin",
    "projector-admin",
    (*ADMIN_READ_MODELS, *COST_READ_MODELS, *RUNTIME_READ_MODELS, ShreddingModel()),
)
STREAMS: tuple[Stream, ...] = (EVENTS, ADMIN)
"""Every stream the projector runs, in the order a restore republishes them."""
