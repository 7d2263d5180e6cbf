"""What the app holds open for its lifetime: the Postgres pool, the event producer, and the
tools (the agents' own toolbox) whose health GET /tools reports.

Both come up lazily when their server is down at start-up, so the API can start (and report
itself unhealthy) before its dependencies; a request that needs one then gets a 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from api._database import CLOSE_TIMEOUT_S, Database
from api._tool_health import ToolHealthBoard
from api.security import Authenticator, RateLimits, TokenService
from api.streams import Streams
from events import (
    Actor,
    ApiKeyUsed,
    BrokerUnavailable,
    Codec,
    Event,
    EventProducer,
    KeyUse,
    codec_from_settings,
    log_end_offsets,
)
from processors.shared.playbook import Playbook, load_playbooks
from processors.shared.toolbox import toolbox
from processors.tools import ToolRegistry
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

KEY_USAGE_INTERVAL_S = 30.0
"""How often an API process publishes when its keys were last used."""
API_ACTOR = Actor(kind="system", id="api")


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
    tenant_database: Database
    tokens: TokenService
    authenticator: Authenticator
    limits: RateLimits
    playbooks: dict[str, Playbook]
    streams: Streams
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Resources:
        """Resources for ``settings``; nothing is connected yet."""
        # The API's own linger (WRENCH_API_PRODUCER_LINGER_MS, none by default): a write waits
        # for its ack, so a linger is latency on every POST; the workers keep theirs.
        producer = EventProducer(
            settings.model_copy(update={"producer_linger_ms": settings.api_producer_linger_ms}),
            codec_from_settings(settings),
            processor="api",
        )
        # The registry and tools the agents load, WRENCH_TOOL_MODULES included, so /tools lists
        # what plans can name. Building them connects nothing; probes run on GET /tools.
        registry, tools = toolbox(settings)
        database = Database(settings)
        tokens = TokenService(settings)
        tenant_database = Database(settings, role=settings.api_database_role)
        return cls(
            settings=settings,
            database=database,
            producer=producer,
            broker=BrokerProbe(producer, settings.topic("events")),
            log_end=LogEnd(settings),
            tool_registry=registry,
            tools=ToolHealthBoard(tools),
            tenant_database=tenant_database,
            tokens=tokens,
            authenticator=Authenticator(settings, database, tokens),
            limits=RateLimits(settings),
            playbooks=load_playbooks(settings.playbooks_dir),
            # The hub reads the projector's offsets as the owner: they are platform-wide.
            streams=Streams(settings, database, producer.codec, tokens),
        )

    @property
    def codec(self) -> Codec:
        """The codec events are written and read with."""
        return self.producer.codec

    async def start(self) -> None:
        """Open what can be opened now; the producer connects on first use."""
        await self.database.open()
        await self.tenant_database.open()
        self.background.append(asyncio.create_task(self._record_key_usage()))

    async def close(self) -> None:
        """Release everything, the producer last so pending publishes are flushed."""
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.streams.close()
        await self.publish_key_usage()
        await self.broker.close()
        await self.tools.close()
        await self.database.close()
        await self.tenant_database.close()
        await self.producer.stop()

    async def _record_key_usage(self) -> None:
        while True:
            await asyncio.sleep(KEY_USAGE_INTERVAL_S)
            await self.publish_key_usage()

    async def publish_key_usage(self) -> None:
        """Publish when keys were last used (one apikey.used per tenant), if any were."""
        for tenant_id, uses in self.authenticator.usage.take().items():
            event = Event.new(
                ApiKeyUsed(uses=[KeyUse(key_id=k, last_used_at=at) for k, at in uses.items()]),
                tenant_id=tenant_id,
                actor=API_ACTOR,
            )
            try:
                await self.producer.publish(event)
            except BrokerUnavailable as exc:
                # last_used_at is informational: a lost batch is logged, not retried.
                log.warning("key usage not recorded", reason=exc.message, keys=len(uses))
