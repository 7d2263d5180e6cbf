"""What the shredding tests share: settings with per-tenant keys, the projector of both logs
with the shredding read model on wrench.admin, and running the key commands as a user does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from pydantic import SecretStr

from events import generate_key
from projections import ADMIN, EVENTS, ProjectorRunner, Stream
from projections._shredding import ShreddingModel
from wrenchai.settings import Settings


def keyed(settings: Settings) -> Settings:
    """``settings`` with a master key (so every tenant gets data keys of its own) and a short
    key cache, so a shredding reaches every process of the test quickly."""
    return settings.model_copy(
        update={"master_keys": SecretStr(generate_key()), "key_cache_ttl_s": 0.3}
    )


def admin_stream() -> Stream:
    """wrench.admin's stream with the shredding read model, whether or not the projector's
    own list carries it yet."""
    if any(isinstance(m, ShreddingModel) for m in ADMIN.models):
        return ADMIN
    return replace(ADMIN, models=(*ADMIN.models, ShreddingModel()))


@asynccontextmanager
async def projectors(settings: Settings) -> AsyncIterator[None]:
    """The projector of wrench.events and of wrench.admin, in this event loop."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(ProjectorRunner(settings, stream).run(stop))
        for stream in (EVENTS, admin_stream())
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


_COMMANDS = (
    "import sys; from wrenchai import _cli_crypto as c; "
    "getattr(c, sys.argv[1])(sys.argv[2:], prog_name='wrenchai')"
)


async def key_command(
    settings: Settings, name: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``rotate`` or ``shred`` of wrenchai._cli_crypto run in a process of its own, its
    settings from WRENCH_ variables, as an operator runs it."""
    env = {**os.environ, **settings.to_env(), "WRENCH_LOG_LEVEL": "warning"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _COMMANDS, name, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
