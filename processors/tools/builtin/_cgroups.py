"""One code.python run's cgroups: how many processes, how much memory and CPU it may use.

A run gets a fresh cgroup in each controller this process may create children in: ``pids``
(``pids.max``), ``memory`` (the run's resident memory, tmpfs pages and page cache together,
without swap) and ``cpu`` (a CFS quota: at most ``cpus`` processors' worth of time). Under
cgroup v1 each controller is its own hierarchy and the run joins one folder in each; under
v2 the folders are one. A controller that is missing or not delegated here is left out, and
the health probe names what the run got.

The kernel enforces these whoever the run's user is, and every process of the run, even one
that left the process group with ``setsid``, is listed in ``cgroup.procs``, so the cleanup
finds and kills it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("pids", "memory", "cpu")
_PREFIX = "wrench-sandbox-"
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupLimits:
    """What the cgroups of one run hold it to."""

    processes: int
    memory_bytes: int
    cpus: float


class RunCgroup:
    """The folders of one run's cgroups, by controller; a process joins all of them."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    @property
    def controllers(self) -> list[str]:
        """The controllers that limit this run (in :data:`CONTROLLERS` order)."""
        return [name for name in CONTROLLERS if name in self.paths]

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes ``0`` to in order to join (done between fork and
        exec), one per distinct folder."""
        return [str(path / "cgroup.procs") for path in _distinct(self.paths.values())]

    def members(self) -> list[int]:
        """Every process in the run's cgroups now."""
        pids: set[int] = set()
        for path in _distinct(self.paths.values()):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in (path / "cgroup.procs").read_text().split())
        return sorted(pids)

    def kill_all(self, deadline_s: float = 5.0) -> None:
        """SIGKILL every member until none is left, then remove the folders.

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
        for path in _distinct(self.paths.values()):
            _remove(path, end)


def hierarchies() -> dict[str, Path]:
    """For each controller, the folder under which this process may create a child that
    the controller limits (its own cgroup there); controllers without one are absent."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    own: dict[str, str] = {}
    for line in memberships:
        _, names, path = line.split(":", 2)
        own[names] = path
    found: dict[str, Path] = {}
    for line in mounts:
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        mount_point = fields[0].split()[4]
        fs_type, _, super_options = fields[1].split()[:3]
        if fs_type == "cgroup":
            for controller in set(CONTROLLERS) & set(super_options.split(",")):
                joined = next((n for n in own if controller in n.split(",")), None)
                if joined is not None:
                    found.setdefault(controller, Path(mount_point + own[joined].rstrip("/")))
        elif fs_type == "cgroup2" and "" in own:
            base = Path(mount_point + own[""].rstrip("/"))
            # v2 lets a cgroup's children use a controller only when the parent delegates it.
            with contextlib.suppress(OSError):
                delegated = (base / "cgroup.subtree_control").read_text().split()
                for controller in set(CONTROLLERS) & set(delegated):
                    found.setdefault(controller, base)
    return found


def create(limits: CgroupLimits) -> RunCgroup | None:
    """Fresh cgroups holding a run to ``limits``, or None where none may be made here."""
    name = f"{_PREFIX}{uuid.uuid4().hex[:16]}"
    made: dict[Path, Path] = {}  # hierarchy folder -> the run's folder in it
    paths: dict[str, Path] = {}
    for controller, parent in hierarchies().items():
        path = made.get(parent)
        if path is None:
            path = parent / name
            try:
                path.mkdir()
            except OSError:
                continue
            made[parent] = path
        v2 = (path / "cgroup.controllers").exists()
        if _write_limits(path, controller, limits, v2=v2):
            paths[controller] = path
    for path in made.values():
        if path not in paths.values():
            _remove(path, time.monotonic() + 1.0)
    return RunCgroup(paths) if paths else None


def available(limits: CgroupLimits) -> list[str]:
    """Which controllers a run gets here (cgroups are made and removed to find out)."""
    cgroup = create(limits)
    if cgroup is None:
        return []
    cgroup.kill_all()
    return cgroup.controllers


def _write_limits(path: Path, controller: str, limits: CgroupLimits, *, v2: bool) -> bool:
    """Write ``controller``'s limits into ``path``; False when the kernel refuses them."""
    quota = max(1_000, int(limits.cpus * _CPU_PERIOD_US))
    files: dict[str, list[tuple[str, str]]] = {
        "pids": [("pids.max", str(limits.processes))],
        "memory": (
            [("memory.max", str(limits.memory_bytes))]
            if v2
            else [("memory.limit_in_bytes", str(limits.memory_bytes))]
        ),
        "cpu": (
            [("cpu.max", f"{quota} {_CPU_PERIOD_US}")]
            if v2
            else [("cpu.cfs_period_us", str(_CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]
        ),
    }
    try:
        for file, value in files[controller]:
            (path / file).write_text(value)
    except OSError:
        return False
    if controller == "memory":
        # No swap either, where the kernel accounts it (absent without swap accounting).
        swap = ("memory.swap.max", "0") if v2 else ("memory.memsw.limit_in_bytes", "")
        with contextlib.suppress(OSError):
            (path / swap[0]).write_text(swap[1] or str(limits.memory_bytes))
    return True


def _distinct(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _remove(path: Path, end: float) -> None:
    """rmdir ``path``, retrying while its last members are still exiting (EBUSY)."""
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= end:
                return
            time.sleep(0.01)
