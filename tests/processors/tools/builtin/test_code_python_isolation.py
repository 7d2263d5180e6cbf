"""What sandboxed code cannot reach: other processes, secrets, state, the network.

Each test runs an escape attempt through code.python with the default settings (isolation
or nothing) and checks that every attempt fails, and, where it matters, that the thing it
aimed at is really there for the worker, so a pass is not an accident of the machine.
Where this machine cannot make the sandbox, code.python refuses and the escape tests are
skipped with the reason (``make test`` installs bubblewrap when it can).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from processors.tools.builtin import CodePython
from processors.tools.builtin._code_python import SandboxRefused
from wrenchai.embedded import EmbeddedBroker, free_port
from wrenchai.settings import Settings

CANARY = "wrench-canary-5f0c1e7d"
CHECKOUT = Path(__file__).resolve().parents[4]
SETTINGS = Settings(sandbox_timeout_s=20)


@pytest.fixture(scope="module")
def tool() -> CodePython:
    return CodePython(SETTINGS)


async def _escape(tool: CodePython, code: str) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON object) in the sandbox and return what it printed;
    skip where code.python refuses to run at all."""
    try:
        result = await tool.call({"code": code})
    except SandboxRefused as refused:
        pytest.skip(f"code.python refuses here, so nothing runs: {refused.message}")
    assert result["exit_code"] == 0, result["stderr"]
    seen: dict[str, Any] = json.loads(result["stdout"])
    return seen


# Python run in the sandbox: try each action, record what it got or the error it met.
_ATTEMPTS = """\
import json, os, socket

def attempt(action):
    try:
        return {"ok": action()}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}

def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")

def connect(host, port):
    with socket.create_connection((host, port), timeout=3):
        return "connected"
"""


def _attempts(**actions: str) -> str:
    """Sandbox code that runs each ``name=expression`` attempt and prints their outcomes."""
    body = ", ".join(f"{name!r}: attempt(lambda: {expr})" for name, expr in actions.items())
    return _ATTEMPTS + f"print(json.dumps({{{body}}}))\n"


def _failed(outcome: object) -> bool:
    return isinstance(outcome, dict) and "error" in outcome and "ok" not in outcome


async def test_code_runs_as_an_unprivileged_user_with_no_capabilities(tool: CodePython) -> None:
    seen = await _escape(
        tool,
        "import json, os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),"
        " 'groups': os.getgroups(), 'cap_eff': status['CapEff'], 'cap_bnd': status['CapBnd'],"
        " 'no_new_privs': status['NoNewPrivs']}))\n",
    )
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["gid"] != 0
    assert seen["groups"] == [] or 0 not in seen["groups"]
    assert int(str(seen["cap_eff"]), 16) == 0
    assert seen["no_new_privs"] == "1"


async def test_no_other_process_and_no_process_environment_is_visible(
    tool: CodePython, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack that worked: glob /proc/*/environ and read the worker's WRENCH_ settings
    (and the parent's, by its pid). The sandbox's /proc lists only its own processes."""
    monkeypatch.setenv("WRENCH_LLM_API_KEY", CANARY)
    worker = os.getpid()
    code = _ATTEMPTS + (
        "import glob\n"
        "found = {p: attempt(lambda p=p: read(p)) for p in glob.glob('/proc/*/environ')}\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        f"worker = attempt(lambda: read('/proc/{worker}/environ'))\n"
        "parent = attempt(lambda: read(f'/proc/{os.getppid()}/environ'))\n"
        "print(json.dumps({'found': found, 'pids': pids, 'worker': worker,"
        " 'parent': parent}))\n"
    )
    seen = await _escape(tool, code)
    assert CANARY not in json.dumps(seen)
    assert _failed(seen["worker"]), "the worker's /proc entry is not there to read"
    assert len(seen["pids"]) <= 2, f"only the sandbox's init and the run: {seen['pids']}"
    assert worker not in seen["pids"]
    assert "WRENCH_" not in json.dumps(seen["parent"])


async def test_a_secrets_file_is_not_readable_even_when_its_mode_allows(
    tool: CodePython, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``*_FILE`` secret in a state directory, readable by anyone on the host: only the
    mount namespace stands between the code and it."""
    secrets = tmp_path / ".wrenchai" / "secrets"
    secrets.mkdir(parents=True)
    secret = secrets / "llm_api_key"
    secret.write_text(CANARY)
    secret.chmod(0o644)
    for folder in (tmp_path, tmp_path / ".wrenchai", secrets):
        folder.chmod(0o755)
    monkeypatch.setenv("WRENCH_LLM_API_KEY_FILE", str(secret))
    seen = await _escape(
        tool,
        _attempts(
            direct=f"read({str(secret)!r})",
            listing=f"os.listdir({str(secrets)!r})",
            via_env="read(os.environ['WRENCH_LLM_API_KEY_FILE'])",
        ),
    )
    assert CANARY not in json.dumps(seen)
    assert all(_failed(outcome) for outcome in seen.values()), seen


async def test_the_state_directory_and_the_hosts_homes_are_not_visible(
    tool: CodePython, state_root: Path, broker: EmbeddedBroker
) -> None:
    """The test session's state directory (the broker's log, Postgres's data), the project
    checkout, /home and what /root holds besides the way to the interpreter are absent;
    nothing can be written outside the run's own /tmp."""
    assert (state_root / "tansu.log").exists()
    name = f"planted-{uuid.uuid4().hex}"
    # Where a write must fail; removed afterwards should the sandbox ever let one through.
    targets = {
        "write_state": state_root / name,
        "write_usr": Path("/usr") / name,
        "write_root": Path("/") / name,
    }
    try:
        seen = await _escape(
            tool,
            _attempts(
                state=f"os.listdir({str(state_root)!r})",
                broker_log=f"read({str(state_root / 'tansu.log')!r})",
                checkout=f"os.listdir({str(CHECKOUT)!r})",
                settings=f"read({str(CHECKOUT / 'wrenchai' / 'settings.py')!r})",
                home="os.listdir('/home')",
                ssh="os.listdir('/root/.ssh')",
                root="sorted(os.listdir('/root'))",
                **{key: f"open({str(path)!r}, 'w').write('x')" for key, path in targets.items()},
            ),
        )
        planted = [str(path) for path in targets.values() if path.exists()]
    finally:
        for path in targets.values():
            path.unlink(missing_ok=True)
    assert planted == []
    root = seen.pop("root")
    for attempt, outcome in seen.items():
        assert _failed(outcome), f"{attempt}: {outcome}"
    # /root exists only where the interpreter lives under it, and then holds only that way.
    assert _failed(root) or set(root["ok"]) <= {".pyenv"}, root


def _postgres_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def test_the_broker_and_postgres_cannot_be_reached(
    tool: CodePython, broker: EmbeddedBroker, postgres_url: str
) -> None:
    targets = {"broker": broker.port, "postgres": _postgres_port(postgres_url)}
    for port in targets.values():
        assert _can_connect("127.0.0.1", port), "the worker itself reaches it"
    seen = await _escape(
        tool, _attempts(**{name: f"connect('127.0.0.1', {port})" for name, port in targets.items()})
    )
    assert all(_failed(outcome) for outcome in seen.values()), seen


def _other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP server on every address of this machine; the peers that connected."""
    peers: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(str(writer.get_extra_info("peername")))
        writer.close()

    port = free_port()
    server = await asyncio.start_server(accept, "0.0.0.0", port)
    async with server:
        yield port, peers


async def test_a_listening_port_on_loopback_or_another_address_cannot_be_reached(
    tool: CodePython, listener: tuple[int, list[str]]
) -> None:
    port, peers = listener
    hosts = {"loopback": "127.0.0.1"}
    other = _other_address()
    if other is not None:
        hosts["other_address"] = other
    hosts["public"] = "1.1.1.1"
    seen = await _escape(
        tool,
        _attempts(**{name: f"connect({host!r}, {port})" for name, host in hosts.items()}),
    )
    assert all(_failed(outcome) for outcome in seen.values()), seen
    assert peers == [], "nothing reached the listener"
    # The listener itself works: the worker reaches it on both addresses.
    assert _can_connect("127.0.0.1", port)
    if other is not None:
        assert _can_connect(other, port)


async def test_without_bubblewrap_and_without_allow_weak_code_python_refuses(
    tmp_path: Path,
) -> None:
    """Isolation made impossible the honest way: the bwrap it would use does not exist.
    Nothing runs (the file the code would write never appears), the error names what is
    missing and the setting, and health says refused."""
    tool = CodePython(Settings(), bwrap=str(tmp_path / "missing" / "bwrap"))
    planted = tmp_path / "ran"
    with pytest.raises(SandboxRefused) as caught:
        await tool.call({"code": f"open({str(planted)!r}, 'w').write('ran')"})
    assert caught.value.code == "SANDBOX_REFUSED" and not caught.value.transient
    assert "bubblewrap" in caught.value.message
    assert "WRENCH_SANDBOX_ALLOW_WEAK" in caught.value.message
    assert caught.value.details["setting"] == "WRENCH_SANDBOX_ALLOW_WEAK"
    assert not planted.exists()
    assert (await tool.sandbox()).mode == "refused"
    health = await tool.health()
    assert not health.ok and health.detail.startswith("mode: refused;")


async def test_with_allow_weak_and_no_bubblewrap_code_runs_weak_and_says_so(
    tmp_path: Path,
) -> None:
    tool = CodePython(Settings(sandbox_allow_weak=True), bwrap=str(tmp_path / "missing"))
    result = await tool.call({"code": "print('ran')"})
    assert result["stdout"] == "ran\n"
    status = await tool.sandbox()
    assert status.mode == "weak"
    assert "WRENCH_SANDBOX_ALLOW_WEAK is true" in status.detail
    health = await tool.health()
    assert health.ok and health.detail.startswith("mode: weak (")


async def test_where_bubblewrap_works_the_mode_is_isolated_even_with_allow_weak(
    tool: CodePython,
) -> None:
    """The setting allows a weaker mode; it never chooses one over isolation."""
    if (await tool.sandbox()).mode != "isolated":
        pytest.skip(f"isolation cannot be made here: {(await tool.sandbox()).detail}")
    weak_allowed = CodePython(Settings(sandbox_allow_weak=True))
    assert (await weak_allowed.sandbox()).mode == "isolated"
    seen = await _escape(weak_allowed, "import json, os; print(json.dumps({'uid': os.getuid()}))")
    assert seen["uid"] != 0
