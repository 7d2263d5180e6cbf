"""``wrenchai health``: the health check a container runs (docker-compose.yml, Dockerfile)."""

from __future__ import annotations

import sys

import click

from wrenchai._cli_common import command_settings
from wrenchai.health import (
    MAX_AGE_S,
    TARGETS,
    Target,
    Verdict,
    check_api,
    check_loop,
    pid1_cmdline,
    target_of,
)
from wrenchai.settings import Settings


@click.command()
@click.argument("target", required=False, type=click.Choice(TARGETS))
@click.option(
    "--url",
    default=None,
    help="What to ask instead of the address the settings give (the API's /health, or a "
    "worker's or the projector's metrics URL).",
)
@click.option(
    "--max-age",
    type=float,
    default=MAX_AGE_S,
    show_default=True,
    help="Seconds since its event loop last ticked after which a worker or the projector is "
    "called dead.",
)
def health(target: Target | None, url: str | None, max_age: float) -> None:
    """Exit 0 when the WrenchAI process of this container is alive, 1 when it is not.

    TARGET is the process to check; without it, the command line of the container's main
    process (PID 1) says which. `api`: GET /health on 127.0.0.1:WRENCH_API_PORT answers 200,
    which it does while its database and broker answer. `projector` and `worker`: the
    process's metrics port (127.0.0.1:WRENCH_METRICS_PORT, which must be set) answers and
    shows that its event loop stamped its liveness within --max-age seconds. The port is
    served from a thread of its own, so its answer alone would not tell a stuck loop from a
    working one; the stamp does. A broker or database outage leaves a worker healthy: it
    waits and resumes by itself, and restarting it would not help. Any other process (a
    one-shot command such as `wrenchai migrate`) has nothing to check and passes.
    """
    if target is None:
        cmdline = pid1_cmdline()
        target = target_of(cmdline)
        if target is None:
            shown = " ".join(cmdline) or "unknown"
            click.echo(f"ok: no long-running WrenchAI process to check (PID 1: {shown})")
            return
    settings = command_settings("health")
    verdict = _check(target, settings, url, max_age)
    click.echo(f"{'ok' if verdict.healthy else 'unhealthy'}: {target}: {verdict.reason}")
    sys.exit(0 if verdict.healthy else 1)


def _check(target: Target, settings: Settings, url: str | None, max_age: float) -> Verdict:
    if target == "api":
        return check_api(url or f"http://{_loopback(settings.api_host)}:{settings.api_port}/health")
    if url is None:
        if not settings.metrics_port:
            return Verdict(
                False,
                "WRENCH_METRICS_PORT is not set (or 0): a worker's and the projector's "
                "liveness is read on their metrics port; set it, or pass --url",
            )
        host = _loopback(settings.metrics_host)
        url = f"http://{host}:{settings.metrics_port}/metrics"
    return check_loop(url, max_age_s=max_age)


def _loopback(host: str) -> str:
    """Where this container reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
