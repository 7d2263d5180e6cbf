"""Supervised child processes: restarted with backoff when they die, stopped on request.

Generic machinery for ``wrenchai dev``; what runs, and in which order it stops, is decided in
:mod:`wrenchai.stack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from wrenchai.embedded import die_with_parent

log = structlog.get_logger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 15.0
STABLE_AFTER_S = 30.0
"""A child that stayed up this long crashed for a new reason: its backoff starts over."""

_READ_SIZE = 64 * 1024
_EXIT_POLL_S = 0.2
_PUMP_GRACE_S = 1.0
_CANNOT_EXECUTE = 126


@dataclass
class Backoff:
    """Exponential restart delay: ``initial`` doubling to ``cap``, reset after a stable run."""

    initial: float = INITIAL_BACKOFF_S
    cap: float = MAX_BACKOFF_S
    stable_after: float = STABLE_AFTER_S
    _next: float = INITIAL_BACKOFF_S

    def __post_init__(self) -> None:
        self._next = self.initial

    def delay(self, uptime: float) -> float:
        """The delay before the next start, given how long the last run lasted."""
        if uptime >= self.stable_after:
            self._next = self.initial
        current = self._next
        self._next = min(self._next * 2, self.cap)
        return current


class Child:
    """One command kept running: its output goes to ``log_path`` and, prefixed with its name,
    to the console. Started in its own process group, so a Ctrl-C in the terminal reaches only
    the supervisor, which then stops the children in order."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        echo: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.echo = echo
        self.backoff = backoff or Backoff()
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._stop_signal: int = signal.SIGTERM
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process, if one runs."""
        if self.proc is None or self.proc.returncode is not None:
            return None
        return self.proc.pid

    def start(self) -> None:
        """Start the process and keep it running until :meth:`stop`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Opened here, outside the event loop's coroutines, and shared by every restart.
        sink = open(self.log_path, "ab")  # closed when the task ends
        self._task = asyncio.create_task(self._keep_running(sink), name=f"child:{self.name}")

    async def _keep_running(self, sink: IO[bytes]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                started = loop.time()
                code = await self._run_once(sink)
                if self._stopping.is_set():
                    return
                delay = self.backoff.delay(loop.time() - started)
                self.restarts += 1
                log.warning(
                    "child exited; restarting",
                    child=self.name,
                    exit_code=code,
                    restarts=self.restarts,
                    delay_s=delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            sink.close()

    async def _run_once(self, sink: IO[bytes]) -> int:
        """Run the command once; returns its exit code (negative: killed by that signal)."""
        try:
            self.proc = await self._spawn()
        except OSError as exc:
            log.error("child could not start", child=self.name, error=str(exc))
            return _CANNOT_EXECUTE
        log.info("child started", child=self.name, pid=self.proc.pid, log=str(self.log_path))
        if self._stopping.is_set():
            # stop() ran while the process was being created and found nothing to signal.
            self.proc.send_signal(self._stop_signal)
        assert self.proc.stdout is not None
        pump = asyncio.create_task(self._pump(self.proc.stdout, sink))
        code = await _exited(self.proc)
        # Whatever the child started in its process group goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        # A grandchild in another group could keep the pipe open; don't wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pump, _PUMP_GRACE_S)
        return code

    async def _spawn(self) -> asyncio.subprocess.Process:
        # Spawned from the event loop's thread (the main one): PR_SET_PDEATHSIG fires when the
        # spawning *thread* exits, so a child spawned from a worker thread would die early.
        return await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,
            process_group=0,
        )

    async def _pump(self, stream: asyncio.StreamReader, sink: IO[bytes]) -> None:
        pending = b""
        while chunk := await stream.read(_READ_SIZE):
            sink.write(chunk)
            sink.flush()
            if self.echo:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._echo(line)
        if self.echo and pending:
            self._echo(pending)

    def _echo(self, line: bytes) -> None:
        sys.stdout.write(f"{self.name:<10} | {line.decode(errors='replace')}\n")
        sys.stdout.flush()

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        """Stop restarting, send ``sig``, and SIGKILL the process if it outlives ``timeout_s``."""
        self._stop_signal = sig
        self._stopping.set()
        if self._task is None:
            return
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning(
                "child did not stop in time; killing it", child=self.name, timeout_s=timeout_s
            )
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            await self._task
        log.info("child stopped", child=self.name)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The child's exit code as soon as it exits. ``proc.wait()`` alone also waits until its
    output pipe closes, which a grandchild that inherited the pipe can put off forever;
    ``returncode`` is set by the child watcher when the child itself exits."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=_EXIT_POLL_S)
    finally:
        waiter.cancel()
    assert proc.returncode is not None
    return proc.returncode


async def stop_all(children: Sequence[Child], timeout_s: float, sig: int = signal.SIGTERM) -> None:
    """Stop several children at once, each within ``timeout_s``."""
    await asyncio.gather(*(child.stop(timeout_s, sig) for child in children))
