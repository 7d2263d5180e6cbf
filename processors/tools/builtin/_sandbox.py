"""The process-level fences around one code.python run, and what this machine allows of them.

Each fence is applied by the child between fork and exec (``preexec``), so the interpreter
that runs the code is born inside them:

- **its own session** (``start_new_session``): the run and everything it starts share one
  process group, which is killed as a whole when the run ends, times out or is cancelled;
- **a pids cgroup** with ``pids.max`` (cgroup v1 ``pids`` hierarchy, or a delegated v2
  subtree) when this process may create one: the kernel refuses a fork past the limit
  whoever the user is, and every process of the run is listed in ``cgroup.procs``, so the
  cleanup kills even processes that left the process group with ``setsid``;
- **RLIMIT_NPROC**: the portable fork-bomb limit, but the kernel does not apply it to root
  (``copy_process`` exempts the root user and CAP_SYS_RESOURCE), so as root it only counts
  when the cgroup is missing too — which is why the cgroup comes first;
- **an empty network namespace** (``unshare(CLONE_NEWNET)``): no interface but a loopback
  that is down, so every connection fails with ENETUNREACH. It needs CAP_SYS_ADMIN (or an
  unprivileged user namespace); where it is refused the run goes on with the host network
  and the health probe says so;
- **rlimits** on CPU seconds, address space, file size and core dumps.

None of this is a security boundary like a VM or a container: the code runs as the worker's
own user, sees the worker's file system, and a kernel bug is an escape. See docs/tools.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_CGROUP_PREFIX = "wrench-sandbox-"
# Loaded here, in the parent: dlopen between fork and exec can deadlock on a lock that
# another thread of the parent held at the fork.
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    """The resource limits of one run."""

    cpu_s: int
    memory_bytes: int
    file_bytes: int
    processes: int


# ---------------------------------------------------------------------------- network


def unshare_net() -> None:
    """Move the calling process into a new, empty network namespace (raises OSError)."""
    unshare = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is not None:
        unshare(CLONE_NEWNET)
        return
    if _LIBC.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


# ---------------------------------------------------------------------------- pids cgroup


class PidsCgroup:
    """One run's pids cgroup: a ``pids.max`` the kernel enforces, and a list of its members."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def procs_file(self) -> str:
        """The file a process writes ``0`` to in order to join (done in ``preexec``)."""
        return str(self.path / "cgroup.procs")

    def members(self) -> list[int]:
        """Every process in the cgroup now."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_all(self, deadline_s: float = 5.0) -> None:
        """SIGKILL every member until none is left, then remove the cgroup.

        Repeated because a member may fork between the read and the kill; the pids limit
        keeps that race short. A member that is already a zombie has left the cgroup.
        """
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            pids = self.members()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        while time.monotonic() < end:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last members are still exiting
                time.sleep(0.01)


def _pids_hierarchy() -> Path | None:
    """The folder under which this process may create a pids cgroup, or None."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own: dict[str, str] = {}
    for line in memberships:
        _, names, path = line.split(":", 2)
        own[names] = path
    for line in mounts:
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        mount_point = fields[0].split()[4]
        fs_type, _, super_options = fields[1].split()[:3]
        if fs_type == "cgroup" and "pids" in super_options.split(","):
            pids = next((names for names in own if "pids" in names.split(",")), None)
            if pids is not None:
                return Path(mount_point + own[pids].rstrip("/"))
        if fs_type == "cgroup2" and "" in own:
            base = Path(mount_point + own[""].rstrip("/"))
            # v2 lets a cgroup's children limit pids only when the parent delegates them.
            with contextlib.suppress(OSError):
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    return base
    return None


def create_pids_cgroup(max_pids: int) -> PidsCgroup | None:
    """A fresh pids cgroup limited to ``max_pids`` processes, or None where not allowed."""
    parent = _pids_hierarchy()
    if parent is None:
        return None
    path = parent / f"{_CGROUP_PREFIX}{uuid.uuid4().hex[:16]}"
    try:
        path.mkdir()
    except OSError:
        return None
    try:
        (path / "pids.max").write_text(str(max_pids))
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return PidsCgroup(path)


def pids_cgroup_available() -> bool:
    """Whether runs get a pids cgroup here (one is made and removed to find out)."""
    cgroup = create_pids_cgroup(1)
    if cgroup is None:
        return False
    cgroup.kill_all()
    return True


# ---------------------------------------------------------------------------- the child


def nproc_applies() -> bool:
    """Whether the kernel enforces RLIMIT_NPROC on runs (never for the root user)."""
    return os.getuid() != 0


def nproc_limit(processes: int) -> int:
    """RLIMIT_NPROC counts every process of the user, so a non-root worker gets its current
    count plus the run's allowance (a bare ``processes`` could forbid even the first fork)."""
    if not nproc_applies():
        return processes
    uid = os.getuid()
    owned = 0
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and uids.real == uid:
            owned += 1
    return owned + processes


def preexec(
    limits: Limits, *, cgroup: PidsCgroup | None, isolate_network: bool
) -> Callable[[], None]:
    """The function the child runs between fork and exec: join, unshare, limit.

    It raises (and so fails the spawn) when a fence it was asked for cannot be put up: a
    run never silently gets less isolation than its health probe reported.
    """
    procs_file = cgroup.procs_file if cgroup is not None else None
    nproc = nproc_limit(limits.processes)

    def apply() -> None:
        if procs_file is not None:
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
