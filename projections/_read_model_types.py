"""What every read model is made of: the event it applies, the statements it returns, and
the protocol it follows.

Below :mod:`projections._read_models`, which lists the read models, and the modules that
define them, so those modules need not import the registry that imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from events import Event, Position

Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Applied:
    """An event the projector applies, with where it sits on the log."""

    event: Event
    position: Position


class ReadModel(Protocol):
    """Folds events into tables. ``tables`` are the ones a rebuild recreates."""

    tables: tuple[str, ...]

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]: ...
