"""The fences around one code.python run, and what this machine allows of them.

**Isolated mode** (the default, and the only one that runs unless
``WRENCH_SANDBOX_ALLOW_WEAK`` says otherwise) starts the interpreter through bubblewrap
(``bwrap``, Debian's ``bubblewrap``) in its own pid, mount, network, ipc and uts namespaces
(and cgroup namespace where the kernel allows), as the unprivileged user 65534
(nobody/nogroup) with no capabilities and ``no_new_privs``:

- its file system is an allow-list: ``/usr`` and the ``/bin``, ``/lib``, ``/lib64`` and
  ``/sbin`` links into it, ``/etc/ld.so.cache``, and the interpreter's own prefix, all
  read-only; the prefix's site-packages are hidden under an empty tmpfs, so only the
  standard library imports. The rest of the root is an empty read-only tmpfs: no state
  directory, no ``*_FILE`` secret, no ``/root`` or ``/home``, no project checkout;
- ``/proc`` is a fresh procfs of the run's pid namespace (it lists only the run's own
  processes), ``/dev`` a minimal set of device nodes;
- ``/tmp`` is a private, size-limited tmpfs: the working directory, HOME and TMPDIR, with
  the snippet bound read-only at ``/tmp/main.py``;
- the network namespace holds only its own loopback, so nothing outside the run answers;
- the environment is cleared and set to a fixed PATH, HOME, TMPDIR and LANG.

As root, bwrap keeps capabilities unless told otherwise: it keeps only CAP_SETUID,
CAP_SETGID and CAP_SETPCAP, and ``setpriv`` (util-linux) inside drops to 65534 and clears
every capability set and the bounding set before it execs the interpreter. A worker that is
not root gets 65534 from an unprivileged user namespace instead (``--uid``, mapped to the
worker's own user outside) with further user namespaces disabled.

**Weak mode** is what works without namespaces: the interpreter runs as the worker's own
user in a temporary directory of the worker's file system, fenced only by its session, the
cgroups, the rlimits and, where ``unshare(CLONE_NEWNET)`` is permitted, an empty network
namespace.

In both modes the child, between fork and exec (``preexec``), joins the run's cgroups
(pids, memory, cpu: ``_cgroups``), sets a parent-death signal and the rlimits (CPU seconds,
address space, file size, core dumps, processes), and runs in its own session, whose
process group is killed as a whole when the run ends. None of this is a VM: a kernel bug is
an escape. See docs/tools.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from processors.tools.builtin._cgroups import RunCgroup

CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: dlopen between fork and exec can deadlock on a lock that
# another thread of the parent held at the fork.
_LIBC = ctypes.CDLL(None, use_errno=True)

Mode = Literal["isolated", "weak", "refused"]

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup: owns no file that matters
WORKDIR = "/tmp"  # inside the sandbox: a private tmpfs
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Where bwrap and setpriv are looked for: fixed, so a writable directory early in the
# worker's PATH cannot put its own "bwrap" in front.
TOOL_PATH = "/usr/bin:/usr/local/bin:/bin:/usr/sbin:/sbin"
# Read-only binds of the system: the interpreter's shared libraries and /bin/sh for
# subprocess. Each is bound, or recreated as the same symlink (merged /usr).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Limits:
    """The resource limits of one run."""

    cpu_s: int
    memory_bytes: int
    file_bytes: int
    processes: int


@dataclass(frozen=True)
class Status:
    """The mode runs get in this process, and in words why."""

    mode: Mode
    detail: str


@dataclass(frozen=True)
class Interpreter:
    """The real interpreter behind ``sys.executable`` (a venv's python is a symlink to it):
    the file to exec, the prefixes its standard library lives under, its site-packages."""

    executable: str
    base_prefix: str
    prefixes: tuple[str, ...]
    site_dirs: tuple[str, ...]


@dataclass(frozen=True)
class Isolation:
    """Whether isolated runs can be made here; ``detail`` names what works or what is
    missing."""

    available: bool
    detail: str
    bwrap: str | None = None
    setpriv: str | None = None
    interpreter: Interpreter | None = None


# ---------------------------------------------------------------------------- isolated mode


def find_tool(name: str) -> str | None:
    """``name``'s path in :data:`TOOL_PATH`, or None."""
    return shutil.which(name, path=TOOL_PATH)


@functools.cache
def describe_interpreter(executable: str) -> Interpreter:
    """Ask the interpreter behind ``executable`` where it lives (once per process)."""
    real = os.path.realpath(executable)
    script = (
        "import json, site, sys; print(json.dumps([sys.base_prefix, sys.base_exec_prefix,"
        " site.getsitepackages()]))"
    )
    out = subprocess.run(
        [real, "-I", "-c", script],
        env={"PATH": SANDBOX_PATH},
        capture_output=True,
        text=True,
        check=True,
        timeout=_PROBE_TIMEOUT_S,
    ).stdout
    base, exec_base, site_dirs = json.loads(out)
    prefixes = tuple(dict.fromkeys(p for p in (base, exec_base) if not _under_system(p)))
    return Interpreter(real, base, prefixes, tuple(site_dirs))


def bwrap_command(
    isolation: Isolation, main_py: Path, *, tmpfs_bytes: int, privileged: bool
) -> list[str]:
    """The argv that runs ``main_py`` isolated, up to and including the interpreter (the
    caller adds the interpreter's options and ``main.py``)."""
    assert isolation.bwrap is not None and isolation.interpreter is not None
    interpreter = isolation.interpreter
    argv = [
        isolation.bwrap,
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]
    for name, value in sandbox_env().items():
        argv += ["--setenv", name, value]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        argv += ["--ro-bind-try", path, path]
    for prefix in interpreter.prefixes:
        # Parents made here rather than by bwrap, which copies the host's modes: /root
        # is 0700, and user 65534 could not reach the standard library through it.
        for parent in reversed(Path(prefix).parents[:-1]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    for site_dir in interpreter.site_dirs:
        if os.path.isdir(site_dir):
            argv += ["--tmpfs", site_dir, "--remount-ro", site_dir]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", WORKDIR]
    argv += ["--ro-bind", str(main_py), f"{WORKDIR}/main.py", "--chdir", WORKDIR]
    argv += ["--remount-ro", "/"]
    if privileged:
        assert isolation.setpriv is not None
        argv += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            argv += ["--cap-add", cap]
        argv += [
            "--",
            isolation.setpriv,
            f"--reuid={SANDBOX_UID}",
            f"--regid={SANDBOX_GID}",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
        ]
    else:
        argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        argv += ["--disable-userns", "--"]
    return [*argv, interpreter.executable]


def sandbox_env() -> dict[str, str]:
    """The whole environment of an isolated run."""
    return {"PATH": SANDBOX_PATH, "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}


# Run inside the sandbox by the probe: what it must see for the mode to count as isolated.
_PROBE_CODE = """\
import json, os, socket, sys
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "base_prefix": sys.base_prefix,
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
}))
"""


@functools.cache
def probe_isolation(bwrap: str | None, python: str) -> Isolation:
    """Start an isolated interpreter once and check what it sees (once per process for a
    given bwrap and interpreter). ``bwrap`` None means not found."""
    if bwrap is None or not os.access(bwrap, os.X_OK):
        where = bwrap or f"bwrap in {TOOL_PATH}"
        return Isolation(False, f"bubblewrap is not installed ({where} not found)")
    privileged = os.geteuid() == 0
    setpriv = find_tool("setpriv") if privileged else None
    if privileged and setpriv is None:
        return Isolation(False, f"setpriv (util-linux) is not installed in {TOOL_PATH}")
    try:
        interpreter = describe_interpreter(python)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Isolation(False, f"{python} could not describe itself: {exc}")
    isolation = Isolation(True, "", bwrap, setpriv, interpreter)
    with tempfile.TemporaryDirectory(prefix="wrench-probe-") as folder:
        main_py = Path(folder) / "main.py"
        main_py.write_text(_PROBE_CODE)
        main_py.chmod(0o644)
        argv = bwrap_command(isolation, main_py, tmpfs_bytes=1 << 20, privileged=privileged)
        try:
            done = subprocess.run(
                [*argv, "-I", "main.py"],
                env={"PATH": SANDBOX_PATH},
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return Isolation(False, f"{bwrap} could not be started: {exc}")
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["nothing"])[-1]
        return Isolation(False, f"{bwrap} cannot make the sandbox here: {said}")
    seen = json.loads(done.stdout)
    problems = [
        *(["it ran as root"] if seen["uid"] == 0 else []),
        *(["it saw network interfaces"] if seen["interfaces"] != ["lo"] else []),
        *(["it saw other processes"] if len(seen["pids"]) > 2 else []),
        *(
            [f"its standard library came from {seen['base_prefix']}"]
            if seen["base_prefix"] != interpreter.base_prefix
            else []
        ),
    ]
    if problems:
        return Isolation(False, f"{bwrap} made a sandbox, but " + " and ".join(problems))
    who = f"user {seen['uid']}:{seen['gid']}" + ("" if privileged else " (user namespace)")
    return Isolation(
        True,
        f"bubblewrap {bwrap}: {who}, own pid, mount, network, ipc and uts namespaces, "
        "read-only allow-listed file system",
        bwrap,
        setpriv,
        interpreter,
    )


def exit_code(returncode: int, *, isolated: bool) -> int:
    """The interpreter's exit code as subprocess reports it: negative for a signal.

    bwrap reports a child killed by signal N as 128 + N, as a shell does; that is turned
    back into -N. (A snippet that calls ``sys.exit(137)`` therefore reads as -9.)
    """
    if isolated and 128 < returncode <= 128 + 64:
        return -(returncode - 128)
    return returncode


def _under_system(path: str) -> bool:
    """Whether ``path`` is already in a system bind (so it needs none of its own)."""
    resolved = Path(path)
    return any(resolved == Path(d) or Path(d) in resolved.parents for d in _SYSTEM_DIRS)


# ---------------------------------------------------------------------------- weak mode


def unshare_net() -> None:
    """Move the calling process into a new, empty network namespace (raises OSError)."""
    unshare = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is not None:
        unshare(CLONE_NEWNET)
        return
    if _LIBC.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


# ---------------------------------------------------------------------------- the child


def nproc_applies(uid: int) -> bool:
    """Whether the kernel enforces RLIMIT_NPROC on ``uid`` (never on root)."""
    return uid != 0


def nproc_limit(processes: int, uid: int) -> int:
    """RLIMIT_NPROC counts every process of the user, so the run's user gets its current
    count plus the run's allowance (a bare ``processes`` could forbid even the first fork,
    or the exec after ``setpriv`` changes user)."""
    if not nproc_applies(uid):
        return processes
    owned = 0
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uids.real == uid:
            owned += 1
    return owned + processes


def preexec(
    limits: Limits, *, cgroup: RunCgroup | None, isolate_network: bool, run_uid: int
) -> Callable[[], None]:
    """The function the child runs between fork and exec: join, unshare, limit.

    It raises (and so fails the spawn) when a fence it was asked for cannot be put up: a
    run never silently gets less isolation than its health probe reported.
    """
    procs_files = cgroup.procs_files if cgroup is not None else []
    nproc = nproc_limit(limits.processes, run_uid)

    def apply() -> None:
        for procs_file in procs_files:
            fd = os.open(procs_file, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        if isolate_network:
            unshare_net()
        # If the worker dies (SIGKILL), the run dies with it rather than living on.
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
