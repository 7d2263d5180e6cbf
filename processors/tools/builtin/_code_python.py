"""code.python: run a snippet of Python in a fenced subprocess and report what it printed.

The snippet is written to ``main.py`` in a fresh temporary directory, which is also the
run's working directory, HOME and TMPDIR, and is deleted afterwards. The interpreter is
this one (``sys.executable``) in isolated mode (``-I``: no PYTHON* variables, no user site,
no current directory on sys.path) and unbuffered (``-u``: what was printed before a timeout
is not lost in a buffer). The environment holds nothing inherited: a fixed PATH, HOME,
TMPDIR and LANG, so no secret of the worker (WRENCH_ENCRYPTION_KEYS, WRENCH_LLM_API_KEY…)
reaches the code. The fences (session, pids cgroup, network namespace, rlimits) are in
``_sandbox``.

The run is over when ``main.py``'s process exits: whatever it left running is killed then,
and on a timeout or a cancellation the whole process group (and cgroup) is killed at once.
A nonzero exit is a result (``exit_code``), not an error; running out of wall time is
:class:`ToolTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from processors.tools.builtin import _sandbox
from processors.tools.builtin._base import BuiltinTool, ToolFailed, ToolTimeout
from processors.tools.descriptors import CODE_PYTHON
from wrenchai.settings import Settings

# Threads count as tasks in a pids cgroup: 64 leaves room for a thread pool or two.
MAX_PROCESSES = 64
# Files the code writes in its directory; the directory is deleted after the run.
MAX_FILE_BYTES = 64 * 1024 * 1024
_PATH = "/usr/local/bin:/usr/bin:/bin"
# Once main.py has exited, how long its output pipes may take to reach end of file.
_DRAIN_GRACE_S = 2.0
_TAIL_CHARS = 2_000


class _Capped:
    """One output stream: the first ``limit`` bytes kept, the rest read and dropped, so the
    child never blocks on a full pipe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    async def drain(self, fd: int) -> None:
        """Read ``fd`` to end of file, then close it (also on error or cancellation)."""
        pipe = os.fdopen(fd, "rb", buffering=0)
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=65_536)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
            try:
                while chunk := await reader.read(65_536):
                    room = self.limit - len(self.data)
                    if len(chunk) > room:
                        self.truncated = True
                    if room > 0:
                        self.data += chunk[:room]
            finally:
                transport.close()
        finally:
            pipe.close()

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class CodePython(BuiltinTool):
    """Runs Python with time, CPU, memory, process, file-size and output limits."""

    spec = CODE_PYTHON

    def __init__(self, settings: Settings) -> None:
        super().__init__(max_result_bytes=settings.max_event_bytes)
        self._timeout_s = settings.sandbox_timeout_s
        self._output_bytes = settings.sandbox_output_bytes
        self._limits = _sandbox.Limits(
            cpu_s=settings.sandbox_cpu_s,
            memory_bytes=settings.sandbox_memory_mb * 1024 * 1024,
            file_bytes=MAX_FILE_BYTES,
            processes=MAX_PROCESSES,
        )
        self._network_isolation: bool | None = None

    async def network_isolation(self) -> bool:
        """Whether runs get an empty network namespace here (tried once, then remembered)."""
        if self._network_isolation is None:
            self._network_isolation = await asyncio.to_thread(_try_network_isolation)
        return self._network_isolation

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        timeout_s = float(tool_input.get("timeout_s", self._timeout_s))
        isolate = await self.network_isolation()
        workdir = Path(tempfile.mkdtemp(prefix="wrench-code-"))
        cgroup = await asyncio.to_thread(_sandbox.create_pids_cgroup, self._limits.processes)
        try:
            (workdir / "main.py").write_text(tool_input["code"], encoding="utf-8")
            proc, stdout_fd, stderr_fd = await self._spawn(workdir, cgroup, isolate)
            return await self._supervise(
                proc, stdout_fd, stderr_fd, tool_input.get("stdin", ""), timeout_s, cgroup
            )
        finally:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill_all)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _spawn(
        self, workdir: Path, cgroup: _sandbox.PidsCgroup | None, isolate: bool
    ) -> tuple[asyncio.subprocess.Process, int, int]:
        """Start ``main.py`` inside the fences; the process and the read ends of its
        stdout and stderr."""
        # Our own pipes, not asyncio's: asyncio's Process.wait() also waits for its pipes to
        # close, which a grandchild holding stdout would put off until the timeout.
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-u",
                "main.py",
                stdin=asyncio.subprocess.PIPE,
                stdout=out_write,
                stderr=err_write,
                cwd=workdir,
                env={
                    "PATH": _PATH,
                    "HOME": str(workdir),
                    "TMPDIR": str(workdir),
                    "LANG": "C.UTF-8",
                },
                start_new_session=True,
                preexec_fn=_sandbox.preexec(self._limits, cgroup=cgroup, isolate_network=isolate),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(out_read)
            os.close(err_read)
            raise ToolFailed(
                f"code.python could not start {sys.executable}: {exc}. Check that the "
                "interpreter exists and that the worker may create processes.",
                tool=self.spec.name,
            ) from exc
        finally:
            os.close(out_write)
            os.close(err_write)
        return proc, out_read, err_read

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        stdout_fd: int,
        stderr_fd: int,
        stdin: str,
        timeout_s: float,
        cgroup: _sandbox.PidsCgroup | None,
    ) -> dict[str, Any]:
        """Feed, read and wait for the run within ``timeout_s``; kill what it leaves."""
        started = time.monotonic()
        out, err = _Capped(self._output_bytes), _Capped(self._output_bytes)
        readers = asyncio.gather(out.drain(stdout_fd), err.drain(stderr_fd))
        try:
            async with asyncio.timeout(timeout_s):
                await _feed(proc, stdin)
                exit_code = await proc.wait()
            duration_s = time.monotonic() - started
        except TimeoutError:
            raise ToolTimeout(
                f"code.python ran out of its {timeout_s:g}s wall-time limit and was killed; "
                "make the code faster or pass a larger timeout_s.",
                tool=self.spec.name,
                timeout_s=timeout_s,
                stdout_tail=out.text()[-_TAIL_CHARS:],
                stderr_tail=err.text()[-_TAIL_CHARS:],
            ) from None
        finally:
            await _end(proc, cgroup, readers)
        return {
            "stdout": out.text(),
            "stderr": err.text(),
            "exit_code": exit_code,
            "duration_s": round(duration_s, 6),
            "truncated": out.truncated or err.truncated,
        }

    async def _probe(self) -> tuple[bool, str]:
        result = await self.call({"code": "print(6 * 7)", "timeout_s": 30})
        ok = result["exit_code"] == 0 and result["stdout"].strip() == "42"
        return ok, f"{sys.executable} {'runs' if ok else 'FAILS'}; {await self.fences()}"

    async def fences(self) -> str:
        """In words: which fences runs get on this machine."""
        network = (
            "network_isolated: true (an empty network namespace)"
            if await self.network_isolation()
            else "network_isolated: false (unshare(CLONE_NEWNET) is not permitted here)"
        )
        if await asyncio.to_thread(_sandbox.pids_cgroup_available):
            processes = f"processes: pids cgroup, at most {self._limits.processes}"
        elif _sandbox.nproc_applies():
            processes = f"processes: RLIMIT_NPROC ({self._limits.processes} more than the user has)"
        else:
            processes = (
                "processes: NOT limited (no pids cgroup, and RLIMIT_NPROC does not apply to "
                "root); the process group is still killed when a run ends"
            )
        return (
            f"{network}; {processes}; memory {self._limits.memory_bytes // (1024 * 1024)} MiB; "
            f"CPU {self._limits.cpu_s}s; wall {self._timeout_s:g}s by default; "
            f"output {self._output_bytes} bytes per stream"
        )


async def _end(
    proc: asyncio.subprocess.Process,
    cgroup: _sandbox.PidsCgroup | None,
    readers: asyncio.Future[Any],
) -> None:
    """Kill whatever the run started (on success, timeout or cancellation alike), reap the
    interpreter, and let its output pipes run dry."""
    _sandbox.kill_group(proc.pid)
    if cgroup is not None:
        await asyncio.to_thread(cgroup.kill_all)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
    # The pipes reach end of file once every writer is dead; a writer that escaped both the
    # group and the cgroup gets a short grace, then its output is dropped.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_GRACE_S):
            await asyncio.shield(readers)
    if not readers.done():
        readers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readers


async def _feed(proc: asyncio.subprocess.Process, stdin: str) -> None:
    """Write ``stdin`` and close it; code that never reads its input is no error."""
    if proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if stdin:
            proc.stdin.write(stdin.encode("utf-8"))
            await proc.stdin.drain()
        proc.stdin.close()


def _try_network_isolation() -> bool:
    """Start a throwaway interpreter in a new network namespace; False where refused."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-c", "pass"],
            preexec_fn=_sandbox.unshare_net,
            env={"PATH": _PATH},
            check=True,
            timeout=30,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True
