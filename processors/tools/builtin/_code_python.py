"""code.python: run a snippet of Python in a sandboxed subprocess and report what it printed.

The snippet is written to ``main.py`` in a fresh temporary directory of the worker, deleted
afterwards. How it runs depends on the sandbox's mode, probed once per process
(:meth:`CodePython.sandbox`, reported by the tool's health and by GET /health):

- ``isolated``: through bubblewrap, as user 65534 in its own pid, mount, network, ipc and
  uts namespaces, seeing a read-only allow-list of the file system and a private ``/tmp``
  (its working directory, HOME and TMPDIR) that holds ``main.py`` (``_sandbox``);
- ``weak``, only when ``WRENCH_SANDBOX_ALLOW_WEAK`` is true and isolation cannot be made:
  as the worker's own user, in the temporary directory, behind the process-level fences;
- ``refused``: isolation cannot be made and weak runs are not allowed, so every call fails
  with :class:`SandboxRefused`, which names what is missing and the setting.

Either way the interpreter is this one's (``sys.executable``, or in isolated mode the real
interpreter behind it, without any site-packages) in isolated mode (``-I``: no PYTHON*
variables, no user site, no current directory on sys.path) and unbuffered (``-u``: what was
printed before a timeout is not lost in a buffer); its environment is a fixed PATH, HOME,
TMPDIR and LANG, so no secret of the worker reaches it that way; and it runs in the run's
cgroups (pids, memory, cpu) under rlimits (``_sandbox``, ``_cgroups``).

The run is over when ``main.py``'s process exits: whatever it left running is killed then,
and on a timeout or a cancellation the whole process group (and cgroup) is killed at once.
A nonzero exit is a result (``exit_code``, negative for a signal), not an error; running out
of wall time is :class:`ToolTimeout`.
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

from processors.tools.builtin import _cgroups, _sandbox
from processors.tools.builtin._base import BuiltinTool, ToolFailed, ToolTimeout
from processors.tools.descriptors import CODE_PYTHON
from wrenchai.settings import Settings

# Threads count as tasks in a pids cgroup: 64 leaves room for a thread pool or two.
MAX_PROCESSES = 64
# Files the code writes in its directory; the directory is deleted after the run.
MAX_FILE_BYTES = 64 * 1024 * 1024
# An isolated run's /tmp is a tmpfs (memory): a bound of its own, beside the memory cgroup
# that counts its pages too.
WORKDIR_BYTES = 2 * MAX_FILE_BYTES
# A run may use at most one processor's worth of time (a CFS quota, where cgroups allow).
MAX_CPUS = 1.0
_PATH = "/usr/local/bin:/usr/bin:/bin"
_ALLOW_WEAK = "WRENCH_SANDBOX_ALLOW_WEAK"
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


class SandboxRefused(ToolFailed):
    """code.python will not run here: the isolated sandbox cannot be made and
    WRENCH_SANDBOX_ALLOW_WEAK is off. The message names what is missing."""

    code = "SANDBOX_REFUSED"


class CodePython(BuiltinTool):
    """Runs Python in a sandbox, with time, CPU, memory, process, file-size and output
    limits.

    ``bwrap`` is the bubblewrap binary to isolate runs with; by default ``bwrap`` is looked
    for in /usr/bin, /usr/local/bin and /bin. A path that does not exist makes isolation
    impossible, as on a machine without bubblewrap.
    """

    spec = CODE_PYTHON

    def __init__(self, settings: Settings, *, bwrap: str | None = None) -> None:
        super().__init__(max_result_bytes=settings.max_event_bytes)
        self._timeout_s = settings.sandbox_timeout_s
        self._output_bytes = settings.sandbox_output_bytes
        self._allow_weak = settings.sandbox_allow_weak
        self._bwrap = bwrap if bwrap is not None else _sandbox.find_tool("bwrap")
        self._limits = _sandbox.Limits(
            cpu_s=settings.sandbox_cpu_s,
            memory_bytes=settings.sandbox_memory_mb * 1024 * 1024,
            file_bytes=MAX_FILE_BYTES,
            processes=MAX_PROCESSES,
        )
        self._cgroup_limits = _cgroups.CgroupLimits(
            processes=MAX_PROCESSES, memory_bytes=self._limits.memory_bytes, cpus=MAX_CPUS
        )
        self._network_isolation: bool | None = None
        self._isolation: _sandbox.Isolation | None = None
        self._status: _sandbox.Status | None = None

    async def sandbox(self) -> _sandbox.Status:
        """The mode runs get here and why: probed on first use, then remembered."""
        if self._status is None:
            isolation = await asyncio.to_thread(
                _sandbox.probe_isolation, self._bwrap, sys.executable
            )
            self._isolation = isolation
            self._status = await self._decide(isolation)
        return self._status

    async def _decide(self, isolation: _sandbox.Isolation) -> _sandbox.Status:
        if isolation.available:
            return _sandbox.Status("isolated", isolation.detail)
        if not self._allow_weak:
            return _sandbox.Status(
                "refused",
                f"code.python refuses to run: {isolation.detail}. Install bubblewrap "
                "(`apt-get install bubblewrap`; `make dev` does it when run as root) on a "
                "machine that may create namespaces, or set "
                f"{_ALLOW_WEAK}=true to run code without them.",
            )
        network = (
            "an empty network namespace"
            if await self.network_isolation()
            else "the HOST'S NETWORK (unshare(CLONE_NEWNET) is not permitted here)"
        )
        return _sandbox.Status(
            "weak",
            f"not isolated ({isolation.detail}); {_ALLOW_WEAK} is true, so code runs as the "
            f"worker's user (uid {os.getuid()}), sees the worker's file system and "
            f"processes, and has {network}",
        )

    async def network_isolation(self) -> bool:
        """Whether weak runs get an empty network namespace here (tried once)."""
        if self._network_isolation is None:
            self._network_isolation = await asyncio.to_thread(_try_network_isolation)
        return self._network_isolation

    async def _run(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        status = await self.sandbox()
        if status.mode == "refused":
            raise SandboxRefused(status.detail, tool=self.spec.name, setting=_ALLOW_WEAK)
        isolated = status.mode == "isolated"
        timeout_s = float(tool_input.get("timeout_s", self._timeout_s))
        # The file system and the process table are read off the event loop: a run must
        # not stall the worker's other tasks.
        workdir = await asyncio.to_thread(_workdir, tool_input["code"])
        cgroup = await asyncio.to_thread(_cgroups.create, self._cgroup_limits)
        try:
            proc, stdout_fd, stderr_fd = await self._spawn(workdir, cgroup, isolated)
            result = await self._supervise(
                proc, stdout_fd, stderr_fd, tool_input.get("stdin", ""), timeout_s, cgroup
            )
        finally:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill_all)
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
        result["exit_code"] = _sandbox.exit_code(result["exit_code"], isolated=isolated)
        return result

    async def _command(
        self, workdir: Path, isolated: bool
    ) -> tuple[list[str], dict[str, str], int, bool]:
        """What to exec for one run: argv, the environment exec gets, the user the code
        runs as (for RLIMIT_NPROC), and whether the child unshares its network itself."""
        options = ["-I", "-u", "main.py"]
        if isolated:
            assert self._isolation is not None
            privileged = os.geteuid() == 0
            argv = _sandbox.bwrap_command(
                self._isolation,
                workdir / "main.py",
                tmpfs_bytes=WORKDIR_BYTES,
                privileged=privileged,
            )
            run_uid = _sandbox.SANDBOX_UID if privileged else os.getuid()
            return [*argv, *options], {"PATH": _PATH, "LANG": "C.UTF-8"}, run_uid, False
        env = {"PATH": _PATH, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
        return [sys.executable, *options], env, os.getuid(), await self.network_isolation()

    async def _spawn(
        self, workdir: Path, cgroup: _cgroups.RunCgroup | None, isolated: bool
    ) -> tuple[asyncio.subprocess.Process, int, int]:
        """Start ``main.py`` inside the fences; the process and the read ends of its
        stdout and stderr."""
        argv, env, run_uid, unshare_net = await self._command(workdir, isolated)
        fences = await asyncio.to_thread(
            _sandbox.preexec,
            self._limits,
            cgroup=cgroup,
            isolate_network=unshare_net,
            run_uid=run_uid,
        )
        # Our own pipes, not asyncio's: asyncio's Process.wait() also waits for its pipes to
        # close, which a grandchild holding stdout would put off until the timeout.
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=out_write,
                stderr=err_write,
                cwd=workdir,
                env=env,
                start_new_session=True,
                preexec_fn=fences,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(out_read)
            os.close(err_read)
            raise ToolFailed(
                f"code.python could not start {argv[0]}: {exc}. Check that it exists and "
                "that the worker may create processes.",
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
        cgroup: _cgroups.RunCgroup | None,
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
        status = await self.sandbox()
        if status.mode == "refused":
            return False, f"mode: refused; {status.detail}"
        result = await self.call({"code": "print(6 * 7)", "timeout_s": 30})
        ok = result["exit_code"] == 0 and result["stdout"].strip() == "42"
        runs = "runs" if ok else "FAILS"
        return ok, f"mode: {status.mode} ({status.detail}); python {runs}; {await self.fences()}"

    async def fences(self) -> str:
        """In words: the limits runs get on this machine."""
        limits = self._limits
        controllers = await asyncio.to_thread(_cgroups.available, self._cgroup_limits)
        isolated = (await self.sandbox()).mode == "isolated"
        run_uid = _sandbox.SANDBOX_UID if isolated and os.geteuid() == 0 else os.getuid()
        if "pids" in controllers:
            processes = f"processes: pids cgroup, at most {limits.processes}"
        elif _sandbox.nproc_applies(run_uid):
            processes = f"processes: RLIMIT_NPROC ({limits.processes} more than the user has)"
        else:
            processes = (
                "processes: NOT limited (no pids cgroup, and RLIMIT_NPROC does not apply to "
                "root); the process group is still killed when a run ends"
            )
        mib = limits.memory_bytes // (1024 * 1024)
        memory = f"memory: {mib} MiB of address space per process" + (
            f", {mib} MiB for the whole run (memory cgroup)" if "memory" in controllers else ""
        )
        cpu = f"CPU: {limits.cpu_s}s per process" + (
            f", at most {MAX_CPUS:g} processor(s) (cpu cgroup)" if "cpu" in controllers else ""
        )
        return (
            f"{processes}; {memory}; {cpu}; wall {self._timeout_s:g}s by default; "
            f"output {self._output_bytes} bytes per stream"
        )


async def _end(
    proc: asyncio.subprocess.Process,
    cgroup: _cgroups.RunCgroup | None,
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
    """Start a throwaway interpreter in a new network namespace; False where refused (weak
    mode only: isolated runs get theirs from bubblewrap)."""
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


def _workdir(code: str) -> Path:
    """A fresh folder holding ``main.py``, readable by the sandbox's user."""
    workdir = Path(tempfile.mkdtemp(prefix="wrench-code-"))
    main_py = workdir / "main.py"
    main_py.write_text(code, encoding="utf-8")
    main_py.chmod(0o644)  # read by user 65534 in isolated mode
    return workdir
