"""code.python: results, limits, and what the sandbox fences off on this machine.

Every run is real: a subprocess of this interpreter, isolated where this machine can make
the sandbox (bubblewrap), weak elsewhere (these tests allow it; what isolation hides is
tested in test_code_python_isolation.py). The fork-bomb and escape tests need a process
limit the kernel enforces (a pids cgroup, or RLIMIT_NPROC for a user that is not root);
where neither exists they are skipped rather than let loose on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from processors.tools.builtin import CodePython, ToolTimeout, _cgroups, _code_python, _sandbox
from tests.processors.tools.builtin.local_http import LocalServer
from wrenchai.settings import Settings

SETTINGS = Settings(
    sandbox_timeout_s=10,
    sandbox_memory_mb=256,
    sandbox_output_bytes=10_000,
    sandbox_allow_weak=True,
)
CGROUP_LIMITS = _cgroups.CgroupLimits(processes=64, memory_bytes=256 << 20, cpus=1.0)


@pytest.fixture(scope="module")
def tool() -> CodePython:
    return CodePython(SETTINGS)


def _processes_with(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _exists(path: str) -> bool:
    return Path(path).exists()


def _run_directories() -> set[Path]:
    """The runs' directories in this machine's temporary folder now."""
    return set(Path(tempfile.gettempdir()).glob("wrench-code-*"))


def _sleeper(marker: str) -> str:
    """Python source that starts a detached 60-second sleeper carrying ``marker``."""
    return (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)  # {marker}'])\n"
    )


def _processes_are_limited() -> bool:
    isolated = _sandbox.probe_isolation(_sandbox.find_tool("bwrap"), sys.executable).available
    return (
        "pids" in _cgroups.available(CGROUP_LIMITS)
        or isolated  # the code runs as user 65534, to which RLIMIT_NPROC applies
        or _sandbox.nproc_applies(os.getuid())
    )


needs_process_limit = pytest.mark.skipif(
    not _processes_are_limited(),
    reason="no pids cgroup and RLIMIT_NPROC does not apply to root: no fork-bomb limit here",
)


async def test_prints_stdout_stderr_and_a_nonzero_exit_as_a_result(tool: CodePython) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    result = await tool.call({"code": code})
    assert result["stdout"] == "out\n"
    assert result["stderr"] == "err\n"
    assert result["exit_code"] == 3
    assert result["truncated"] is False
    assert 0 < result["duration_s"] < 10


async def test_stdin_reaches_the_code(tool: CodePython) -> None:
    result = await tool.call({"code": "print(input()[::-1])", "stdin": "wrench\n"})
    assert result["stdout"] == "hcnerw\n"


async def test_an_exception_is_a_traceback_on_stderr_and_exit_1(tool: CodePython) -> None:
    result = await tool.call({"code": "1 / 0"})
    assert result["exit_code"] == 1
    assert "ZeroDivisionError" in result["stderr"]


async def test_parent_secrets_are_not_in_the_environment(
    tool: CodePython, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRENCH_ENCRYPTION_KEYS", "top-secret-key")
    monkeypatch.setenv("WRENCH_LLM_API_KEY", "sk-secret")
    code = "import json, os\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    before = _run_directories()
    result = await tool.call({"code": code})
    seen = json.loads(result["stdout"])
    assert "top-secret" not in result["stdout"] and "sk-secret" not in result["stdout"]
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE", "PWD"}
    assert seen["env"]["HOME"] == seen["env"]["TMPDIR"] == seen["cwd"]
    assert _run_directories() <= before, "the run's directory is deleted afterwards"


async def test_isolated_mode_ignores_python_variables(
    tool: CodePython, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    result = await tool.call(
        {"code": "import sys; print(sys.flags.isolated, '/nowhere' in sys.path)"}
    )
    assert result["stdout"] == "1 False\n"


async def test_an_infinite_loop_times_out_and_leaves_no_process(tool: CodePython) -> None:
    marker = f"wrench-test-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as caught:
        await tool.call(
            {"code": _sleeper(marker) + "print('spinning')\nwhile True: pass\n", "timeout_s": 1.5}
        )
    assert time.monotonic() - started < 6
    assert caught.value.code == "TOOL_TIMEOUT" and caught.value.transient
    assert "spinning" in caught.value.details["stdout_tail"], "output before the kill is kept"
    assert _processes_with(marker) == []


async def test_children_left_running_are_killed_when_the_run_ends(tool: CodePython) -> None:
    marker = f"wrench-test-{uuid.uuid4().hex}"
    result = await tool.call({"code": _sleeper(marker) + "print('done')"})
    assert result["exit_code"] == 0
    assert _processes_with(marker) == []


async def test_a_cancelled_run_leaves_no_process(tool: CodePython) -> None:
    marker = f"wrench-test-{uuid.uuid4().hex}"
    task = asyncio.create_task(
        tool.call({"code": _sleeper(marker) + "import time; time.sleep(30)"})
    )
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _processes_with(marker) == []


async def test_a_memory_bomb_ends_with_memory_error_within_the_limit(tool: CodePython) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"
    started = time.monotonic()
    result = await tool.call({"code": code})
    assert time.monotonic() - started < 10
    assert result["exit_code"] != 0
    assert "MemoryError" in result["stderr"]


async def test_huge_output_is_truncated_at_the_cap(tool: CodePython) -> None:
    result = await tool.call(
        {"code": "import sys\nprint('x' * 5_000_000)\nsys.stderr.write('e' * 20_000)"}
    )
    assert result["truncated"] is True
    assert result["stdout"] == "x" * 10_000
    assert result["stderr"] == "e" * 10_000
    assert result["exit_code"] == 0


@needs_process_limit
async def test_a_fork_bomb_is_stopped_by_the_process_limit(tool: CodePython) -> None:
    marker = f"wrench-test-{uuid.uuid4().hex}"
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 10_000:\n"
        "        if os.fork() == 0:\n"
        f"            os.execv('/bin/sleep', ['/bin/sleep', '60', '{marker}'])\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('refused after', n, exc.errno)\n"
    )
    result = await tool.call({"code": code})
    assert result["stdout"].startswith("refused after")
    assert int(result["stdout"].split()[2]) < 10_000
    assert _processes_with(marker) == []


@needs_process_limit
async def test_a_classic_fork_bomb_ends_cleanly(tool: CodePython) -> None:
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    with pytest.raises(ToolTimeout):
        await tool.call({"code": code, "timeout_s": 2})
    # The machine can still start processes, and the run left nothing behind.
    after = await tool.call({"code": "print('alive')"})
    assert after["stdout"] == "alive\n"


async def test_a_child_that_leaves_the_process_group_is_still_killed_with_a_cgroup(
    tool: CodePython,
) -> None:
    """Killed by the cgroup cleanup, and in isolated mode by the end of its pid namespace."""
    if "pids" not in _cgroups.available(CGROUP_LIMITS):
        pytest.skip("no pids cgroup here: a setsid child escapes the process-group kill")
    marker = f"wrench-test-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv('/bin/sleep', ['/bin/sleep', '60', '{marker}'])\n"
    )
    await tool.call({"code": code})
    assert _processes_with(marker) == []


async def test_the_network_is_unreachable_when_isolation_is_available(tool: CodePython) -> None:
    if (await tool.sandbox()).mode != "isolated" and not await tool.network_isolation():
        pytest.skip("no bubblewrap, and unshare(CLONE_NEWNET) is not permitted here")

    async def hello(request: web.Request) -> web.StreamResponse:
        return web.Response(text="reached")

    async with LocalServer({"/": hello}) as server:
        code = (
            "import urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen('{server.url}/', timeout=3).read())\n"
            "except OSError as exc:\n"
            "    print('refused', exc)\n"
        )
        result = await tool.call({"code": code})
    assert result["stdout"].startswith("refused")
    assert server.seen == []


async def test_health_runs_the_interpreter_and_names_the_mode_and_the_fences(
    tool: CodePython,
) -> None:
    health = await tool.health()
    assert health.ok
    assert health.detail.startswith(f"mode: {(await tool.sandbox()).mode} (")
    assert "python runs" in health.detail
    for fence in ("processes:", "memory:", "CPU:", "wall 10s", "output 10000 bytes"):
        assert fence in health.detail


async def test_without_a_cgroup_the_process_group_kill_still_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cgroups, "create", lambda limits: None)
    tool = CodePython(SETTINGS)
    marker = f"wrench-test-{uuid.uuid4().hex}"
    result = await tool.call({"code": _sleeper(marker) + "print('done')"})
    assert result["stdout"] == "done\n"
    assert _processes_with(marker) == []
    with pytest.raises(ToolTimeout):
        await tool.call({"code": _sleeper(marker) + "while True: pass", "timeout_s": 1})
    assert _processes_with(marker) == []


async def test_runs_leave_no_cgroup_and_no_directory_behind(tool: CodePython) -> None:
    def leftovers() -> set[Path]:
        return {
            path
            for hierarchy in _cgroups.hierarchies().values()
            for path in hierarchy.glob("wrench-sandbox-*")
        }

    before, directories = leftovers(), _run_directories()
    result = await tool.call({"code": "import os; print(os.getcwd())"})
    assert result["exit_code"] == 0
    assert _run_directories() <= directories
    assert leftovers() <= before


async def test_the_cpu_limit_stops_a_busy_loop_before_the_wall_time() -> None:
    tool = CodePython(Settings(sandbox_cpu_s=1, sandbox_timeout_s=20))
    started = time.monotonic()
    result = await tool.call({"code": "while True: pass"})
    assert time.monotonic() - started < 10
    assert result["exit_code"] in (-9, -24), "SIGXCPU at the soft limit, SIGKILL at the hard"


async def test_a_file_past_the_size_limit_cannot_be_written(tool: CodePython) -> None:
    code = (
        "import errno\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        f.write(b'x' * (65 * 1024 * 1024))\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno])\n"
    )
    result = await tool.call({"code": code})
    assert result["stdout"] == "EFBIG\n"


async def test_weak_runs_without_a_network_namespace_go_on_only_when_allowed_and_say_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The one case where a run has the host's network: no bubblewrap, no unshare, and
    WRENCH_SANDBOX_ALLOW_WEAK set; health spells it out."""
    monkeypatch.setattr(_code_python, "_try_network_isolation", lambda: False)
    tool = CodePython(SETTINGS, bwrap=str(tmp_path / "no-bwrap"))
    assert (await tool.call({"code": "print('ran')"}))["stdout"] == "ran\n"
    health = await tool.health()
    assert health.ok and health.detail.startswith("mode: weak (")
    assert "HOST'S NETWORK" in health.detail
