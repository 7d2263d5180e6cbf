"""Is this process alive? The answer a container's health check asks for (``wrenchai health``).

The API says so itself: ``GET /health`` answers 200 while its database and broker answer.

A worker or the projector has no HTTP port but its Prometheus metrics
(``WRENCH_METRICS_PORT``), served from a thread of their own so that a scrape never waits for
the event loop. That the port answers therefore proves only that the process exists. So the
event loop, where all the work happens, stamps :data:`LOOP_TICK` every :data:`TICK_S`
seconds, and the check reads that stamp through the port: a process is alive when its port
answers and its loop ticked within the last ``max_age`` seconds. A loop blocked by a stuck
call, or dead while the process lingers, stops ticking and fails the check; a broker or
database outage does not (the loop waits on them, ticking), because restarting a process
cannot fix those: the API's /health and the ResourceMonitor's CONSUMER_LAG alert report them.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

TICK_S = 5.0
"""How often a worker's or the projector's event loop stamps :data:`LOOP_TICK`."""
MAX_AGE_S = 30.0
"""The default oldest stamp a live process may show: six ticks, so a loop busy for a few
seconds (a large batch, a garbage collection) is not called dead."""
TIMEOUT_S = 4.0

_TICK_NAME = "wrench_event_loop_tick_timestamp_seconds"
LOOP_TICK = Gauge(
    _TICK_NAME,
    "Unix time at which this process's event loop last stamped its liveness (every 5 s, in "
    "workers and the projector); `wrenchai health` calls the process dead when it is older "
    "than 30 s.",
)

Target = Literal["api", "projector", "worker"]
TARGETS: tuple[Target, ...] = ("api", "projector", "worker")
_TARGETS_BY_COMMAND: dict[str, Target] = {target: target for target in TARGETS}


def tick() -> None:
    """Stamp the liveness of the event loop this runs on: call it from that loop."""
    LOOP_TICK.set(time.time())


async def keep_ticking(stop: asyncio.Event | None = None) -> None:
    """Stamp the loop's liveness every :data:`TICK_S` until ``stop`` is set (or for ever)."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        tick()
        try:
            await asyncio.wait_for(stop.wait(), TICK_S)
        except TimeoutError:
            pass


@dataclass(frozen=True)
class Verdict:
    """What a check found: healthy or not, and one line saying why."""

    healthy: bool
    reason: str


def check_api(url: str, timeout_s: float = TIMEOUT_S) -> Verdict:
    """The API at ``url`` (its /health) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Verdict(True, f"{url} answered {response.status}")
    except urllib.error.HTTPError as exc:
        return Verdict(False, f"{url} answered {exc.code}: {_short(exc.read())}")
    except (urllib.error.URLError, OSError) as exc:
        return Verdict(False, f"{url} does not answer: {_reason(exc)}")


def check_loop(
    url: str, max_age_s: float = MAX_AGE_S, timeout_s: float = TIMEOUT_S, now: float | None = None
) -> Verdict:
    """The metrics at ``url`` answer, and show a loop tick at most ``max_age_s`` old."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return Verdict(False, f"{url} answered {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return Verdict(False, f"{url} does not answer: {_reason(exc)}")
    stamp = _loop_tick(text)
    if stamp is None or stamp <= 0:
        return Verdict(False, f"{url} shows no loop tick yet (the process is starting)")
    age = (time.time() if now is None else now) - stamp
    if age > max_age_s:
        return Verdict(
            False, f"the event loop last ticked {age:.0f}s ago (more than {max_age_s:.0f}s)"
        )
    return Verdict(True, f"the event loop ticked {max(age, 0.0):.1f}s ago")


def _loop_tick(exposition: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        if family.name == _TICK_NAME:
            for sample in family.samples:
                return float(sample.value)
    return None


def target_of(cmdline: Sequence[str]) -> Target | None:
    """Which check the command line of a ``wrenchai`` process needs, from its subcommand
    (None: not a long-running process, e.g. ``wrenchai migrate`` or a shell)."""
    words = list(cmdline)
    for start, word in enumerate(words):
        if Path(word).name == "wrenchai":  # the script, or ``python -m wrenchai``
            words = words[start + 1 :]
            break
    else:
        return None
    options_with_values = {"--state-dir"}
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in options_with_values:
            skip = True
        elif not word.startswith("-"):
            return _TARGETS_BY_COMMAND.get(word)
    return None


def pid1_cmdline() -> list[str]:
    """The command line of the container's main process (PID 1), empty when unreadable."""
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


def _short(body: bytes) -> str:
    return body.decode("utf-8", errors="replace").strip()[:300]
