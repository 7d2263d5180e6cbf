"""``wrenchai submit`` and ``wrenchai watch``: the command line as a client of the API.

``submit`` POSTs /tasks; ``watch`` follows ``WS /ws/tasks/{task_id}`` and draws the view that
:mod:`wrenchai._watch_view` folds from its messages, or with ``--json`` prints each event
message as one line. A dropped connection is resumed from the last position received, with
backoff, so an API restart neither repeats nor loses an event.

Both find the API and the credential by themselves beside ``wrenchai dev``: ``--api-url`` /
``WRENCH_API_URL``, else the URL the stack in ``--state-dir`` recorded; ``--api-key`` /
``WRENCH_API_KEY`` (or ``WRENCH_API_KEY_FILE``), else the stack's bootstrap admin key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import click
import httpx
import yaml
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from wrenchai._state import ADMIN_KEY_FILE, STACK_FILE
from wrenchai._watch_screen import render
from wrenchai._watch_view import NOT_WATCHED, WatchView, accepts, fold
from wrenchai.settings import Settings

REFUSED = 4
"""Exit status of ``submit`` when the API refused the submission (bad input, a scope the
credential lacks)."""
FIRST_TRIES = 3
"""Connection attempts before ``watch`` gives up on an API it has never reached."""
MAX_BACKOFF_S = 2.0
DEFAULT_RETRY_S = 300.0
MAX_MESSAGE_BYTES = 16 * 2**20
# Close codes of the stream (see the stream protocol in docs/api.md).
_AUTH_FAILED, _UNKNOWN_TASK, _TOO_MANY = 1008, 4404, 4429

EXIT_HELP = (
    "Exit status: 0 the task completed, 1 it failed, 2 it was cancelled, 3 it could not be "
    "watched (no connection to the API, a credential it refused, or a task it does not know)."
)


class NotWatched(Exception):
    """The task cannot be followed: the message says why and what to do (exit status 3)."""


@dataclass(frozen=True)
class ApiTarget:
    """Where the API is and the credential to show it."""

    url: str
    key: str | None

    @property
    def headers(self) -> dict[str, str]:
        # A bearer token may be a JWT or an API key (wr_...): the API tells them apart.
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def stream_url(self, task_id: str) -> str:
        base = self.url.rstrip("/")
        scheme, sep, rest = base.partition("://")
        ws = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme) if sep else "ws"
        return f"{ws}://{rest if sep else base}/ws/tasks/{task_id}"


def api_target(api_url: str | None, api_key: str | None, state_dir: Path | None) -> ApiTarget:
    """The API and credential: the flags, then WRENCH_API_URL / WRENCH_API_KEY, then what the
    dev stack in ``state_dir`` recorded (its URL, its bootstrap admin's key)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise NotWatched(f"the WRENCH_ settings are invalid: {exc}") from exc
    url = api_url or settings.api_url or _recorded_url(state_dir)
    url = url or f"http://127.0.0.1:{settings.api_port}"
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if key is None and state_dir is not None and (state_dir / ADMIN_KEY_FILE).is_file():
        key = (state_dir / ADMIN_KEY_FILE).read_text().strip() or None
    return ApiTarget(url=url, key=key)


def _recorded_url(state_dir: Path | None) -> str | None:
    path = state_dir / STACK_FILE if state_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text()).get("api")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


# -- submit ----------------------------------------------------------------------------------
def constraints_of(constraints: str | None, playbook: str | None) -> dict[str, Any] | None:
    """The submission's constraints: ``--constraints`` JSON, with ``--playbook`` as
    ``constraints.playbook`` (a name, or the playbook a YAML/JSON file holds, inline)."""
    chosen: dict[str, Any] = {}
    if constraints is not None:
        try:
            parsed = json.loads(constraints)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--constraints") from exc
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--constraints")
        chosen = parsed
    if playbook is not None:
        if "playbook" in chosen:
            raise click.BadParameter(
                "--constraints already names a playbook; give it once", param_hint="--playbook"
            )
        chosen["playbook"] = _playbook(playbook)
    return chosen or None


def _playbook(value: str) -> str | dict[str, Any]:
    path = Path(value)
    if not path.is_file() and path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return value  # the name of a playbook the deployment ships
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise click.BadParameter(
            f"cannot read the playbook file {path}: {exc}", param_hint="--playbook"
        ) from exc
    if not isinstance(loaded, dict):
        raise click.BadParameter(
            f"{path} holds no playbook (a mapping with name and steps)", param_hint="--playbook"
        )
    return loaded


def post_task(target: ApiTarget, body: dict[str, Any]) -> dict[str, Any]:
    """POST /tasks; the accepted body. NotWatched when the API cannot be reached or refuses
    the credential; SubmissionRefused when it refuses the task."""
    try:
        response = httpx.post(f"{target.url.rstrip('/')}/tasks", json=body, headers=target.headers)
    except httpx.HTTPError as exc:
        raise NotWatched(_unreachable(target, exc)) from exc
    if response.status_code == 401:
        raise NotWatched(_refused_credential(target, _error_message(response)))
    if response.status_code != 202:
        raise SubmissionRefused(f"{response.status_code}: {_error_message(response)}")
    accepted: dict[str, Any] = response.json()
    return accepted


class SubmissionRefused(Exception):
    """The API refused the task itself (exit status 4): the message is its error."""


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        details = error.get("details")
        return str(error["message"]) + (f" ({json.dumps(details)})" if details else "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:500] or response.reason_phrase


def _unreachable(target: ApiTarget, exc: BaseException) -> str:
    return (
        f"cannot reach the API at {target.url} ({exc or type(exc).__name__}); start it "
        "(`wrenchai dev`), or point --api-url / WRENCH_API_URL at it"
    )


def _refused_credential(target: ApiTarget, why: str) -> str:
    hint = (
        "no credential was found: pass --api-key or set WRENCH_API_KEY (or WRENCH_API_KEY_FILE)"
        if target.key is None
        else "pass a valid one with --api-key or WRENCH_API_KEY (or WRENCH_API_KEY_FILE)"
    )
    return f"the API at {target.url} refused the credential ({why}); {hint}"


# -- watch -----------------------------------------------------------------------------------
class Sink(Protocol):
    """Where a watch shows what it receives."""

    def update(self, view: WatchView, message: Mapping[str, Any] | None) -> None:
        """``view`` after a message; ``message`` is a new event message, None otherwise."""

    def note(self, text: str | None) -> None:
        """A word about the connection (None: connected again)."""


async def follow(
    target: ApiTarget,
    task_id: str,
    sink: Sink,
    *,
    retry_for: float = DEFAULT_RETRY_S,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> WatchView:
    """Follow the task's stream until it ends; the final view. Reconnects with backoff from
    the last position received; raises NotWatched when it cannot (see the module)."""
    view = WatchView(task_id=task_id)
    connected_once, failures, down_since = False, 0, 0.0
    while True:
        try:
            async with connect(
                target.stream_url(task_id),
                additional_headers=target.headers,
                open_timeout=10,
                close_timeout=2,
                max_size=MAX_MESSAGE_BYTES,
            ) as socket:
                # The first message says where to start, so the server need not wait for it.
                await socket.send(json.dumps({"resume_from": view.position}))
                if failures:
                    sink.note(None)
                connected_once, failures = True, 0
                async for raw in socket:
                    view = await _receive(socket, view, raw, sink)
                    if view.ended:
                        return view
            if socket.close_code == 1000 and view.exit_status is not None:
                return view
            why = f"the API closed the stream ({socket.close_code})"
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            if view.exit_status is not None and code == 1000:
                return view
            if code == _AUTH_FAILED:
                raise NotWatched(_refused_credential(target, reason or "closed 1008")) from exc
            if code == _UNKNOWN_TASK:
                raise NotWatched(f"the API knows no task {task_id} ({reason or 4404})") from exc
            why = f"the stream closed ({code}{f' {reason}' if reason else ''})"
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise NotWatched(_refused_credential(target, f"HTTP {status}")) from exc
            if status == 404:
                raise NotWatched(
                    f"the API at {target.url} has no stream for task {task_id} (HTTP 404)"
                ) from exc
            why = f"the API answered HTTP {status}"
        except InvalidURI as exc:
            raise NotWatched(f"--api-url {target.url} is not a URL: {exc}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not connected_once and failures + 1 >= FIRST_TRIES:
                raise NotWatched(_unreachable(target, exc)) from exc
            why = f"cannot connect ({exc or type(exc).__name__})"
        now = time.monotonic()
        down_since = down_since if failures else now
        if connected_once and now - down_since > retry_for:
            raise NotWatched(f"lost the API at {target.url} for over {retry_for:.0f} s: {why}")
        failures += 1
        delay = min(MAX_BACKOFF_S, 0.25 * 2**failures) * random.uniform(0.8, 1.2)
        sink.note(f"{why}; reconnecting in {delay:.1f} s")
        await sleep(delay)


async def _receive(socket: Any, view: WatchView, raw: str | bytes, sink: Sink) -> WatchView:
    try:
        message = json.loads(raw)
    except ValueError:
        return view
    if not isinstance(message, dict):
        return view
    kind = message.get("type")
    if kind == "ping":
        # A socket the server is closing refuses the answer; what it already sent is still
        # to be read, so that is no reason to stop reading.
        with contextlib.suppress(ConnectionClosed):
            await socket.send('{"type": "pong"}')
        return view
    if kind == "error":
        error = message.get("error")
        sink.note(f"the API said: {error.get('message') if isinstance(error, dict) else error}")
        return view
    new = accepts(view, message)
    view = fold(view, message)
    sink.update(view, message if new else None)
    return view


class JsonSink:
    """``--json``: each new event message as one line on stdout, and nothing else there."""

    def update(self, view: WatchView, message: Mapping[str, Any] | None) -> None:
        if message is not None:
            sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    def note(self, text: str | None) -> None:
        if text:
            click.echo(f"watch: {text}", err=True)


class LiveSink:
    """The terminal view, redrawn as messages arrive (and a few times a second, for the
    connection note)."""

    def __init__(self, console: Console, url: str) -> None:
        self.url = url
        self.view: WatchView | None = None
        self.connection: str | None = None
        self.live = Live(
            get_renderable=self.render, console=console, refresh_per_second=4, transient=False
        )

    def render(self) -> RenderableType:
        if self.view is None:
            return Text(f"connecting to {self.url}…", style="dim")
        return render(self.view, self.connection)

    def update(self, view: WatchView, message: Mapping[str, Any] | None) -> None:
        self.view = view
        if message is not None or view.ended:
            self.live.refresh()

    def note(self, text: str | None) -> None:
        self.connection = text
        self.live.refresh()


def watch_task(target: ApiTarget, task_id: str, as_json: bool, retry_for: float) -> int:
    """Follow the task on the terminal (or as JSON lines) and return the exit status."""
    try:
        task_id = str(uuid.UUID(task_id))
    except ValueError:
        click.echo(f"error: {task_id!r} is not a task id (a UUID)", err=True)
        return NOT_WATCHED
    if as_json:
        return _run_follow(target, task_id, JsonSink(), retry_for)
    sink = LiveSink(Console(), target.url)
    with sink.live:
        code = _run_follow(target, task_id, sink, retry_for)
    return code


def _run_follow(target: ApiTarget, task_id: str, sink: Sink, retry_for: float) -> int:
    try:
        view = asyncio.run(follow(target, task_id, sink, retry_for=retry_for))
    except NotWatched as exc:
        click.echo(f"error: {exc}", err=True)
        return NOT_WATCHED
    if view.exit_status is None:
        click.echo(f"error: the stream of task {task_id} ended without an outcome", err=True)
        return NOT_WATCHED
    return view.exit_status


# -- the commands ----------------------------------------------------------------------------
def _state_dir() -> Path | None:
    context = click.get_current_context(silent=True)
    return context.find_root().params.get("state_dir") if context is not None else None


def _api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--api-key",
        default=None,
        help="The credential to send (default WRENCH_API_KEY or WRENCH_API_KEY_FILE, else the "
        "dev stack's admin-api-key in --state-dir). The variables keep it out of `ps`.",
    )(command)
    return click.option(
        "--api-url",
        default=None,
        help="The API's base URL (default WRENCH_API_URL, else the URL of the dev stack in "
        "--state-dir, else http://127.0.0.1:8000).",
    )(command)


_RETRY_OPTION = click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=DEFAULT_RETRY_S,
    show_default=True,
    help="Seconds to keep reconnecting to an API that went away before giving up (exit 3).",
)


@click.command(epilog=EXIT_HELP)
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
@_RETRY_OPTION
@_api_options
def watch(
    task_id: str, as_json: bool, retry_for: float, api_url: str | None, api_key: str | None
) -> None:
    """Follow TASK_ID live until it ends: a bar per stage of its plan, the current step and
    tool, attempts, tokens and cost, each evaluation's score and interval, and alerts.

    A dropped connection is resumed where it stopped: no event is shown twice or missed.
    With --json, stdout carries only the events, one JSON message per line
    ({"position": ..., "event": {...}}); notes go to stderr.
    """
    sys.exit(_watch(task_id, as_json, retry_for, api_url, api_key))


def _watch(
    task_id: str, as_json: bool, retry_for: float, api_url: str | None, api_key: str | None
) -> int:
    try:
        target = api_target(api_url, api_key, _state_dir())
        return watch_task(target, task_id, as_json, retry_for)
    except NotWatched as exc:
        click.echo(f"error: {exc}", err=True)
        return NOT_WATCHED
    except KeyboardInterrupt:
        return 130


@click.command(
    epilog="Exit status: 0 submitted (with --watch: as `wrenchai watch`, 0 completed, 1 "
    "failed, 2 cancelled), 3 the API could not be reached or refused the credential, 4 the API "
    "refused the task (its error is printed)."
)
@click.argument("description")
@click.option(
    "--playbook",
    default=None,
    help="A playbook the deployment ships, by NAME, or a YAML/JSON FILE holding one, sent "
    "inline (needs the scope playbooks:inline).",
)
@click.option(
    "--constraints",
    default=None,
    metavar="JSON",
    help='Constraints as a JSON object, e.g. \'{"alerts": {"stall_after_s": 30}}\'.',
)
@click.option(
    "--timeout", type=click.IntRange(min=1), default=None, help="Seconds the task may run."
)
@click.option("--watch", "then_watch", is_flag=True, help="Follow the task like `wrenchai watch`.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the API's answer as JSON (with --watch: each event as one JSON line).",
)
@_RETRY_OPTION
@_api_options
def submit(
    description: str,
    playbook: str | None,
    constraints: str | None,
    timeout: int | None,
    then_watch: bool,
    as_json: bool,
    retry_for: float,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Submit a task described by DESCRIPTION and print its id."""
    body: dict[str, Any] = {"description": description}
    chosen = constraints_of(constraints, playbook)
    if chosen is not None:
        body["constraints"] = chosen
    if timeout is not None:
        body["timeout"] = timeout
    try:
        target = api_target(api_url, api_key, _state_dir())
        accepted = post_task(target, body)
    except NotWatched as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(NOT_WATCHED)
    except SubmissionRefused as exc:
        click.echo(f"error: the API refused the task: {exc}", err=True)
        sys.exit(REFUSED)
    task_id = str(accepted["task_id"])
    if not then_watch:
        click.echo(json.dumps(accepted) if as_json else task_id)
        return
    if not as_json:
        click.echo(task_id)
    try:
        sys.exit(watch_task(target, task_id, as_json, retry_for))
    except KeyboardInterrupt:
        sys.exit(130)
