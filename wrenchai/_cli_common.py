"""What every command of the CLI shares: its settings (the environment, then the stack
recorded in ``--state-dir``) and running a coroutine with errors as messages."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from events import Actor
from wrenchai._state import settings_for
from wrenchai.errors import WrenchError
from wrenchai.logging import configure_logging
from wrenchai.settings import Settings

T = TypeVar("T")


SERVICES = frozenset(
    {"api", "projector", "super-agent", "journey-agent", "inspector-agent", "cost-guard", "tracer"}
)
"""Long-running processes: they read a state directory only when told to (--state-dir or
WRENCH_STATE_DIR), never the default one found in the directory they happen to start in,
so a service started beside a `wrenchai dev` checkout does not take that stack's secrets
and database for its own."""


def command_settings(process: str) -> Settings:
    """The settings of the running command, with logging set up for ``process``."""
    context = click.get_current_context(silent=True)
    state_dir: Path | None = None
    if context is not None:
        root = context.find_root()
        state_dir = root.params.get("state_dir")
        implicit = root.get_parameter_source("state_dir") == click.core.ParameterSource.DEFAULT
        if process in SERVICES and implicit:
            state_dir = None
    try:
        settings = settings_for(state_dir)
    except WrenchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    configure_logging(settings, process=process)
    return settings


def cli_actor() -> Actor:
    """Who ran the command, as the events it causes name them."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor(kind="system", id=f"cli:{who}")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; a WrenchError becomes its message on stderr and exit status 1."""
    try:
        return asyncio.run(main())
    except WrenchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
