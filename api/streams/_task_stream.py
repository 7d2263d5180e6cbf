"""One task's stream: its history from the archive, then its live tail, with no gap and no
duplicate across the switch.

The stream subscribes to the hub first, which fixes for each partition the offset from which
the hub will deliver (``start``). Everything before ``start`` comes from the archive, read in
one snapshot together with how far the projector has archived the partition; the records the
projector has not archived yet come from the hub's ring; everything from ``start`` on comes
live. Positions only grow within a task (all its events share one partition), so the stream
also drops anything at or before the last position it sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from api._readmodels import decode_history, fetch_history_after
from api._resources import Resources
from api.streams._frames import EndFrame, EventFrame, Frame, LiveFrame
from api.streams._hub import Delivery, StreamUnavailable, Subscription, stream_message
from events import END_STATUS, Position
from projections import EVENTS

LOCATE_POLL_S = 0.1
LOCATE_GRACE_S = 1.5
"""How long a stream waits for a task it does not know yet: one submitted a moment ago is
read by the hub within milliseconds, long before the projector shows it."""


class UnknownTask(Exception):
    """No such task in the caller's tenant (or it never reached the log)."""


@dataclass(frozen=True)
class TaskStream:
    """Where a task's stream reads: its tenant, its id and the partition its events are on."""

    tenant_id: str
    task_id: uuid.UUID
    partition: int


async def locate_task(resources: Resources, tenant_id: str, task_id: uuid.UUID) -> TaskStream:
    """The task's stream, waiting a little for a task submitted a moment ago to reach the
    read model or the hub; UnknownTask when it does not (or is another tenant's)."""
    hub = resources.streams.hub
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(LOCATE_GRACE_S, resources.settings.read_wait_timeout_s)
    hub.start()
    while True:
        async with resources.tenant_database.tenant(tenant_id) as conn:
            partition = await conn.fetchval(
                "SELECT last_partition FROM tasks WHERE task_id = $1 AND tenant_id = $2",
                task_id,
                tenant_id,
            )
        if partition is None:
            partition = hub.find_task(tenant_id, str(task_id))
        if partition is not None:
            return TaskStream(tenant_id, task_id, partition)
        if loop.time() >= deadline:
            raise UnknownTask(str(task_id))
        await asyncio.sleep(LOCATE_POLL_S)


async def task_frames(
    resources: Resources,
    stream: TaskStream,
    after: int | None,
    subscribed: Callable[[Subscription], None] | None = None,
) -> AsyncIterator[Frame]:
    """The task's events after offset ``after`` (all of them when None), then
    :class:`LiveFrame`, then live events until the task ends (:class:`EndFrame`).

    Raises StreamUnavailable when the hub cannot read the log, and SlowConsumer (from the
    hub) when the caller falls too far behind.
    """
    task_key = str(stream.task_id)
    subscription = await resources.streams.hub.subscribe(
        stream.tenant_id,
        lambda d: d.task_id == task_key,
        resources.settings.read_wait_timeout_s,
    )
    if subscribed is not None:
        subscribed(subscription)
    try:
        last = -1 if after is None else after
        for frame in await _catch_up(resources, stream, subscription, last):
            yield frame
            if isinstance(frame, EventFrame):
                last = Position.parse(frame.position).offset
            if isinstance(frame, EndFrame):
                return
        yield LiveFrame()
        while True:
            delivery = await subscription.next()
            if delivery.offset <= last or delivery.message is None:
                continue
            last = delivery.offset
            yield EventFrame(str(delivery.position), delivery.message, delivery.type)
            if delivery.type in END_STATUS:
                yield EndFrame(END_STATUS[delivery.type])
                return
    finally:
        subscription.close()


async def _catch_up(
    resources: Resources, stream: TaskStream, subscription: Subscription, after: int
) -> list[Frame]:
    """The task's events after ``after`` and before the subscription's start, ending with an
    EndFrame when they include the task's end."""
    settings = resources.settings
    start = subscription.start.get(stream.partition, 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.read_wait_timeout_s
    while True:
        async with resources.tenant_database.tenant(
            stream.tenant_id, isolation="repeatable_read"
        ) as conn:
            # One snapshot: the archive holds every record before the projector's offset.
            archived_to = await conn.fetchval(
                """SELECT next_offset FROM consumer_offsets
                   WHERE group_id = $1 AND topic = $2 AND partition = $3""",
                EVENTS.group(settings),
                settings.topic("events"),
                stream.partition,
            )
            archived_to = min(archived_to or 0, start)
            records = await fetch_history_after(
                conn,
                settings.topic("events"),
                stream.tenant_id,
                stream.task_id,
                Position(stream.partition, after),
                before=archived_to,
            )
        bridge = resources.streams.hub.buffered(stream.partition, archived_to, start)
        if bridge is not None:
            break
        if loop.time() >= deadline:
            raise StreamUnavailable(
                "the archive is too far behind the log to join them; retry in a moment"
            )
        await asyncio.sleep(LOCATE_POLL_S)
    frames: list[Frame] = []
    for event in await decode_history(resources.codec, records):
        message = stream_message(event.position, event.model_dump(mode="json"))
        frames.append(EventFrame(event.position, message, event.type))
    wanted = [d for d in bridge if d.task_id == str(stream.task_id) and d.offset > after]
    await resources.streams.hub.render(wanted)
    frames.extend(_event_frame(d) for d in wanted if d.message is not None)
    for index, frame in enumerate(frames):
        if isinstance(frame, EventFrame) and frame.type in END_STATUS:
            return [*frames[: index + 1], EndFrame(END_STATUS[frame.type])]
    return frames


def _event_frame(delivery: Delivery) -> EventFrame:
    assert delivery.message is not None
    return EventFrame(str(delivery.position), delivery.message, delivery.type)
