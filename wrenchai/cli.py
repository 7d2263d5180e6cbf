"""The ``wrenchai`` command line. Every command reads the one Settings object."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TypeVar

import click

from wrenchai._cli_audit import audit
from wrenchai._cli_common import command_settings, run
from wrenchai._cli_crypto import rotate, shred
from wrenchai._cli_health import health
from wrenchai._cli_identity import keys, tenants, users
from wrenchai._cli_mcp import mcp
from wrenchai._cli_replay import replay
from wrenchai._cli_usage import usage
from wrenchai._cli_watch import submit, watch
from wrenchai.errors import WrenchError

T = TypeVar("T")


@click.group()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".wrenchai"),
    envvar="WRENCH_STATE_DIR",
    show_default=True,
    help="A `wrenchai dev` state directory: admin commands find its broker and database "
    "there (WRENCH_* variables still win).",
)
def main(state_dir: Path) -> None:
    """WrenchAI: an event-sourced platform for teams of AI agents."""
    del state_dir  # read by each command through click's context


keys.add_command(rotate)
tenants.add_command(shred)
main.add_command(tenants)
main.add_command(tenants, name="tenant")
main.add_command(users)
main.add_command(keys)
main.add_command(audit)
main.add_command(submit)
main.add_command(watch)
main.add_command(replay)
main.add_command(usage)
main.add_command(mcp)
main.add_command(health)


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path(".wrenchai"),
    show_default=True,
    help="Where Postgres data, keys and logs live.",
)
@click.option("--api-port", type=int, default=8000, show_default=True, help="Port of the API.")
@click.option(
    "--broker-port",
    type=int,
    default=9092,
    show_default=True,
    help="Port of the embedded broker (when WRENCH_KAFKA_BOOTSTRAP is unset).",
)
@click.option(
    "--replicas",
    multiple=True,
    metavar="NAME=COUNT",
    help="Run COUNT workers of agent NAME, sharing its partitions (e.g. journey-agent=2); "
    "repeatable.",
)
def dev(state_dir: Path, api_port: int, broker_port: int, replicas: tuple[str, ...]) -> None:
    """Run the whole stack on embedded components: broker, Postgres, projector, workers, API."""
    from wrenchai.stack import run_dev

    try:
        code = run_dev(
            state_dir=state_dir, api_port=api_port, broker_port=broker_port, replicas=replicas
        )
    except WrenchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        code = 1
    sys.exit(code)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default WRENCH_API_HOST).")
@click.option("--port", type=int, default=None, help="Port (default WRENCH_API_PORT).")
def api(host: str | None, port: int | None) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    from api.app import create_app

    settings = command_settings("api")
    app = create_app(settings)
    # What start-up built lives as long as the process: keep it out of every full collection,
    # which otherwise walks it all (tens of milliseconds) inside whichever request allocates.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        # websockets' Sans-I/O protocol: it waits for the socket to drain before each send,
        # which is what lets a stream notice a client that does not read.
        ws="websockets-sansio",
        ws_per_message_deflate=settings.ws_compression,
    )


@main.command()
def projector() -> None:
    """Run the projector: wrench.events into the archive and the read models; and the
    ResourceMonitor beside it, unless WRENCH_MONITOR_ENABLED=false."""
    from processors.monitor import ResourceMonitor
    from projections import run_projector
    from wrenchai.health import keep_ticking
    from wrenchai.metrics import serve_metrics

    settings = command_settings("projector")
    try:
        serve_metrics(settings, "projector")
    except WrenchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)

    async def projector_and_monitor() -> None:
        monitors = [ResourceMonitor(settings)] if settings.monitor_enabled else []
        # keep_ticking: the loop's liveness, read by `wrenchai health projector`.
        await run_projector(settings, companions=[keep_ticking, *(m.run for m in monitors)])

    run(projector_and_monitor)


@main.command()
@click.argument("name")
def worker(name: str) -> None:
    """Run one agent worker (super-agent, ...) until SIGTERM."""
    import importlib

    from wrenchai._workers import available_workers, worker_module

    known = available_workers()
    if name not in known:
        click.echo(f"error: no worker called {name!r}; workers: {', '.join(known)}", err=True)
        sys.exit(2)
    settings = command_settings(name)
    module = importlib.import_module(worker_module(name))
    try:
        runner = module.worker(settings)
        runner.main()
    except WrenchError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


@main.command()
def migrate() -> None:
    """Apply the database migrations this database lacks."""
    from projections import migrate_database

    settings = command_settings("migrate")
    applied = run(lambda: migrate_database(settings))
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@main.group()
def topics() -> None:
    """Manage WrenchAI's topics."""


@topics.command("create")
def topics_create() -> None:
    """Create wrench.events, wrench.admin and wrench.dlq (existing ones are checked)."""
    from events import bootstrap_topics

    settings = command_settings("topics")
    counts = run(lambda: bootstrap_topics(settings))
    for name, count in sorted(counts.items()):
        click.echo(f"{name}: {count} partitions")


@main.group()
def schema() -> None:
    """The event catalog as JSON Schema."""


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the catalog as a markdown page (docs/events.md).",
)
def schema_export(directory: Path, markdown: Path | None) -> None:
    """Write one JSON Schema per event type and version into DIRECTORY."""
    from events.schema import export_schemas, render_markdown

    written = export_schemas(directory)
    click.echo(f"wrote {len(written)} schema(s) to {directory}")
    if markdown is not None:
        markdown.write_text(render_markdown())
        click.echo(f"wrote {markdown}")


@main.group()
def projections() -> None:
    """Read-model maintenance."""


@projections.command("rebuild")
def projections_rebuild() -> None:
    """Replay wrench.events and wrench.admin from offset 0 into fresh tables and swap them
    in atomically."""
    from projections import rebuild_all

    settings = command_settings("rebuild")
    for report in run(lambda: rebuild_all(settings)):
        click.echo(str(report))


@main.command("settings")
def settings_table() -> None:
    """Print every WRENCH_ setting with its default and meaning, as markdown."""
    from wrenchai.settings import settings_markdown

    click.echo(settings_markdown(), nl=False)


@main.command()
def restore() -> None:
    """Republish the archive into an empty broker, every record at its original offset."""
    from projections import restore_all

    settings = command_settings("restore")
    for report in run(lambda: restore_all(settings)):
        click.echo(str(report))


if __name__ == "__main__":
    main()
