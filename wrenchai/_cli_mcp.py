"""``wrenchai mcp``: WrenchAI as an MCP server over stdio, for an MCP host to launch.

It is a client of the API, like ``wrenchai submit``, and finds the API and the credential the
same way: ``--api-url`` / ``WRENCH_API_URL``, else the URL the dev stack in ``--state-dir``
recorded; ``--api-key`` / ``WRENCH_API_KEY`` (or ``WRENCH_API_KEY_FILE``), else the stack's
bootstrap admin key. Stdout carries the protocol and nothing else; logs go to stderr.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import click

from wrenchai._cli_common import command_settings, run
from wrenchai._cli_watch import NotWatched, api_target


@click.command("mcp")
@click.option(
    "--api-url",
    default=None,
    help="The API's base URL (default WRENCH_API_URL, else the URL of the dev stack in "
    "--state-dir, else http://127.0.0.1:8000).",
)
@click.option(
    "--api-key",
    default=None,
    help="The credential every call sends, an API key or an access token (default "
    "WRENCH_API_KEY or WRENCH_API_KEY_FILE, else the dev stack's admin-api-key in "
    "--state-dir). The variables keep it out of `ps`.",
)
def mcp(api_url: str | None, api_key: str | None) -> None:
    """Serve WrenchAI's tools, task resources and playbook prompts to an MCP host over
    stdio, acting as the credential given (see docs/mcp.md)."""
    settings = command_settings("mcp")
    context = click.get_current_context()
    state_dir: Path | None = context.find_root().params.get("state_dir")
    try:
        target = api_target(api_url, api_key, state_dir)
    except NotWatched as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if target.key is None:
        click.echo(
            "error: no credential for the API: set WRENCH_API_KEY (or WRENCH_API_KEY_FILE) "
            "or pass --api-key",
            err=True,
        )
        sys.exit(1)
    # Imported once there is something to serve: the API's modules take seconds to load.
    from api.mcp import serve_stdio
    from processors.shared.playbook import load_playbooks

    playbooks = load_playbooks(settings.playbooks_dir)
    key = target.key
    run(lambda: serve_stdio(target.url, key, playbooks, _version()))


def _version() -> str:
    try:
        return metadata.version("wrenchai")
    except metadata.PackageNotFoundError:
        return "0.0.0"
