"""What the app holds open for its lifetime: the Postgres pool, the event producer, and the
tools (the agents' own toolbox) whose health GET /tools reports.

Both come up lazily when their server is down at start-up, so the API can start (and report
itself unhealthy) before its dependencies; a request that needs one then gets a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import structlog

from api._tool_health import ToolHealthBoard
from events import BrokerUnavailable, Codec, EventProducer, codec_from_settings, log_end_offsets
from processors.toolbox import toolbox
from processors.tools import ToolRegistry
from projections import DatabaseUnavailable, create_pool
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0

# Errors of a query that mean "Postgres went away", as opposed to a bad query. They become
# DatabaseUnavailable here, at the edge, so handlers and routes never see asyncpg's types.
# Any error while acquiring a connection is one too: the pool (re)connects there.
LOST_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError is one too
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # What asyncpg raises when the server dropped a pooled connection while it sat idle and
    # the protocol state went out of step ("cannot switch to state ...").
    asyncpg.InternalClientError,
)


class Database:
    """The asyncpg pool: opened at start-up, or on the first request if Postgres was down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Try to open the pool now; a failure is logged and retried on demand."""
        try:
            await self.pool()
        except DatabaseUnavailable as exc:
            log.warning("database unavailable at start-up", reason=exc.message)

    async def pool(self) -> asyncpg.Pool:
        """The pool, opening it if needed; DatabaseUnavailable when Postgres does not answer."""
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self.settings, timeout=CONNECT_TIMEOUT_S)
            return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; losing Postgres on the way is DatabaseUnavailable."""
        pool = await self.pool()
        try:
            conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except (asyncpg.PostgresError, *LOST_CONNECTION_ERRORS) as exc:
            raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
        try:
            yield conn
        except LOST_CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"lost the connection to Postgres: {exc}") from exc
        finally:
            await _release(pool, conn)

    async def close(self) -> None:
        """Close the pool, waiting a little for requests still using it."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            pool.terminate()


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    # The pool resets a connection on release and terminates it when that fails, so a
    # failure here only means the connection was discarded; it must not replace the
    # request's own outcome (an answer already computed, or DatabaseUnavailable).
    try:
        await pool.release(conn)
    except Exception as exc:
        log.warning("pooled connection discarded", error_type=type(exc).__name__)


class BrokerProbe:
    """Asks the producer for the metadata of one topic, with a deadline.

    The metadata request is shielded from the deadline: cancelling the producer half-way
    through its start would leak its connections. A slow probe keeps running and the next
    health check waits on the same one instead of piling up another.
    """

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._inflight: asyncio.Task[int] | None = None

    async def reachable(self, timeout_s: float) -> bool:
        """True when the broker gave the topic's partitions within ``timeout_s``."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self.producer.partitions(self.topic))
            self._inflight.add_done_callback(_retrieve)
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), timeout_s) > 0
        except (BrokerUnavailable, TimeoutError):
            return False

    async def close(self) -> None:
        """Let a probe still running finish, so the producer is never stopped mid-start."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight], timeout=CLOSE_TIMEOUT_S)


def _retrieve(task: asyncio.Task[int]) -> None:
    # A probe that outlived its deadline has nobody awaiting it; read its outcome so asyncio
    # does not warn that an exception was never retrieved.
    if not task.cancelled():
        task.exception()


class LogEnd:
    """The log end of wrench.events, read at most every ``ttl_s``.

    Reading it starts a short-lived consumer; a monitor polling /health every second must
    not start one a second.
    """

    def __init__(self, settings: Settings, ttl_s: float = 2.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._value: dict[int, int] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def offsets(self, timeout_s: float) -> dict[int, int]:
        """Each partition's next offset; BrokerUnavailable when it cannot be read in time."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._value is None or now - self._read_at > self.ttl_s:
                topic = self.settings.topic("events")
                self._value = await log_end_offsets(self.settings, topic, timeout_s)
                self._read_at = now
            return self._value


@dataclass(frozen=True)
class Resources:
    """Everything a request may need, built once per app."""

    settings: Settings
    database: Database
    producer: EventProducer
    broker: BrokerProbe
    log_end: LogEnd
    tool_registry: ToolRegistry
    tools: ToolHealthBoard

    @classmethod
    def build(cls, settings: Settings) -> Resources:
        """Resources for ``settings``; nothing is connected yet."""
        producer = EventProducer(settings, codec_from_settings(settings.fernet_keys()))
        # The registry and tools the agents load, WRENCH_TOOL_MODULES included, so /tools lists
        # what plans can name. Building them connects nothing; probes run on GET /tools.
        registry, tools = toolbox(settings)
        return cls(
            settings=settings,
            database=Database(settings),
            producer=producer,
            broker=BrokerProbe(producer, settings.topic("events")),
            log_end=LogEnd(settings),
            tool_registry=registry,
            tools=ToolHealthBoard(tools),
        )

    @property
    def codec(self) -> Codec:
        """The codec events are written and read with."""
        return self.producer.codec

    async def start(self) -> None:
        """Open what can be opened now; the producer connects on first use."""
        await self.database.open()

    async def close(self) -> None:
        """Release everything, the producer last so pending publishes are flushed."""
        await self.broker.close()
        await self.tools.close()
        await self.database.close()
        await self.producer.stop()
