"""Task streams over WebSocket and Server-Sent Events, on a real uvicorn, the real broker and
the real projector: history then live with no gap and no duplicate, resume, the end of a
task, slow clients, many sockets, and tenant isolation."""

from __future__ import annotations

import asyncio
import random
import socket as pysocket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from events import EventProducer
from tests.api._streams_support import (
    completed,
    live_api,
    positions,
    publish_thoughts,
    receive,
    socket,
    submitted,
    thought,
    until_end,
)
from tests.api._support import seed_api_key
from wrenchai.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Streams start at once (no wait for a first message) and hold enough sockets."""
    return settings.model_copy(update={"ws_start_wait_s": 0.0, "ws_max_sockets_per_principal": 250})


@pytest.fixture
async def api_key(db: asyncpg.Connection, settings: Settings) -> str:
    """An admin key of the default tenant."""
    return await seed_api_key(db, settings)


@pytest.fixture
async def api(
    settings: Settings, topics: dict[str, int], projector: None, api_key: str
) -> AsyncIterator[str]:
    """The API on a real server, with the projector running beside it."""
    del topics, projector
    async with live_api(settings) as base:
        yield base


async def history(
    base: str, api_key: str, task_id: uuid.UUID, through: str | None = None
) -> list[dict[str, Any]]:
    """The task's history as GET /tasks/{task_id}/events answers it once the projector has
    archived ``through`` (a stream can be ahead of the archive)."""
    params = {"wait_for": through} if through else {}
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": api_key}) as http:
        response = await http.get(f"/tasks/{task_id}/events", params=params)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_catch_up_then_live_has_no_gap_and_no_duplicate(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """A socket opened while 1,000 events of its task are being published receives every
    event exactly once, in log order, each exactly as the history shows it, then the end."""
    task_id = uuid.uuid4()
    await producer.publish_many([submitted(task_id), *[thought(task_id, n) for n in range(1, 100)]])
    async with socket(api, f"/ws/tasks/{task_id}", api_key) as ws:
        # Published while the socket catches up from the archive and switches to live.
        await publish_thoughts(producer, task_id, 100, 1_000, batch=20)
        await producer.publish(completed(task_id))
        messages = await until_end(ws)
        assert ws.close_code == 1000
    events = [m for m in messages if "position" in m]
    assert len(events) == 1 + 99 + 1_000 + 1
    assert len(set(positions(messages))) == len(events)
    assert messages[-1] == {"type": "end", "status": "completed"}
    assert {"type": "live"} in messages
    expected = await history(api, api_key, task_id, events[-1]["position"])
    assert [m["event"] for m in events] == expected
    assert [m["position"] for m in events] == [e["position"] for e in expected]


async def test_resume_from_a_random_position_sends_exactly_what_follows(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """A client that reconnects with ?resume_from= (or sends it with its credential in the
    first message) receives every event after that position and none before, across the
    archive and the live tail."""
    task_id = uuid.uuid4()
    await producer.publish_many([submitted(task_id), *[thought(task_id, n) for n in range(1, 60)]])
    async with socket(api, f"/ws/tasks/{task_id}", api_key) as ws:
        first = [await receive(ws) for _ in range(30)]
    cut = random.randrange(len(first))
    resume = first[cut]["position"]
    later = asyncio.create_task(publish_thoughts(producer, task_id, 60, 200, batch=10))
    async with socket(api, f"/ws/tasks/{task_id}?resume_from={resume}", api_key) as ws:
        await later
        await producer.publish(completed(task_id))
        resumed = await until_end(ws)
    async with socket(api, f"/ws/tasks/{task_id}") as ws:
        hello = {"type": "auth", "token": api_key, "resume_from": resume}
        await ws.send(orjson.dumps(hello).decode())
        by_message = await until_end(ws)
    last = positions(resumed)[-1]
    expected = [e["position"] for e in await history(api, api_key, task_id, last)]
    after = expected[expected.index(resume) + 1 :]
    assert positions(resumed) == after
    assert positions(by_message) == after
    assert positions(first) + after[len(first) - cut - 1 :] == expected


async def test_a_terminal_task_streams_its_history_and_ends(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """A task that has ended gives its whole history, then the end message, then 1000."""
    task_id = uuid.uuid4()
    await producer.publish_many([submitted(task_id), thought(task_id, 1), completed(task_id)])
    async with socket(api, f"/ws/tasks/{task_id}", api_key) as ws:
        messages = await until_end(ws)
        assert ws.close_code == 1000
    assert [m.get("event", {}).get("type") for m in messages[:3]] == [
        "task.submitted",
        "thought.recorded",
        "task.completed",
    ]
    assert messages[-1] == {"type": "end", "status": "completed"}


async def test_server_sent_events_resume_after_last_event_id(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """GET /tasks/{id}/stream sends each event with its position as id and, with
    Last-Event-ID, only what follows it; it ends with an end event."""
    task_id = uuid.uuid4()
    written = await producer.publish_many(
        [submitted(task_id), *[thought(task_id, n) for n in range(1, 20)], completed(task_id)]
    )
    expected = [e["position"] for e in await history(api, api_key, task_id, str(written[-1]))]
    resume = expected[7]
    headers = {"X-API-Key": api_key, "Last-Event-ID": resume}
    ids, kinds, ended = [], [], None
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
        async with http.stream("GET", f"/tasks/{task_id}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()
                    continue
                kinds.append(fields.get("event"))
                if fields.get("event") == "event":
                    ids.append(fields["id"])
                    assert orjson.loads(fields["data"])["position"] == fields["id"]
                if fields.get("event") == "end":
                    ended = orjson.loads(fields["data"])
                fields = {}
    assert ids == expected[8:]
    assert ended == {"status": "completed"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=15) as http:
        bad = await http.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": "x"})
        unknown = await http.get(f"/tasks/{uuid.uuid4()}/stream")
    assert bad.status_code == 422
    assert unknown.status_code == 404


async def test_a_slow_client_is_cut_without_delaying_a_fast_one(
    settings: Settings,
    topics: dict[str, int],
    projector: None,
    api_key: str,
    producer: EventProducer,
) -> None:
    """A client that stops reading overflows its queue and is closed with 1013; a client of
    the same events reading at full speed receives every one of them."""
    del topics, projector
    small = settings.model_copy(update={"ws_queue_size": 600})
    task_id = uuid.uuid4()
    await producer.publish(submitted(task_id))
    async with live_api(small) as api:
        path = f"/ws/events?task_id={task_id}&types=thought.recorded"
        # The slow client reads nothing more and its kernel buffer is small and fixed (by
        # default Linux may grow it to 32 MiB and hold the whole test's stream).
        tight = pysocket.socket()
        tight.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, 65_536)
        tight.connect(("127.0.0.1", int(api.rsplit(":", 1)[1])))
        async with (
            socket(api, path, api_key, max_queue=1, sock=tight) as slow,
            socket(api, path, api_key) as fast,
        ):
            assert await receive(slow) == {"type": "live"}
            assert await receive(fast) == {"type": "live"}
            reading = asyncio.create_task(_take(fast, 3_000, whole=True))
            # 3,000 events of 8 KiB: more than the sockets' buffers hold for the slow client.
            # (a steady flow, which a client reading as fast as it can keeps up with).
            await publish_thoughts(
                producer, task_id, 1, 3_000, batch=50, padding=8_000, pause_s=0.05
            )
            received = await reading
            assert [m["event"]["payload"]["number"] for m in received] == list(range(1, 3_001))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert slow.close_code == 1013
            assert "too slow" in (slow.close_reason or "")


async def test_two_hundred_sockets_each_receive_every_event(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """200 sockets on one API process, fed by its one consumer, each receive every event of
    the tenant's live stream in order."""
    task_id = uuid.uuid4()
    async with asyncio.TaskGroup() as group:
        opening = [group.create_task(_open(api, api_key)) for _ in range(200)]
    sockets = [t.result() for t in opening]
    try:
        await producer.publish_many(
            [submitted(task_id), *[thought(task_id, n) for n in range(1, 10)]]
        )
        results = await asyncio.gather(*(_take(ws, 10) for ws in sockets))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    first = results[0]
    assert len(first) == 10
    assert all(r == first for r in results)


async def _open(api: str, api_key: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(
        api.replace("http", "ws", 1) + "/ws/events", additional_headers={"X-API-Key": api_key}
    )
    assert await receive(ws) == {"type": "live"}
    return ws


async def _take(ws: Any, count: int, whole: bool = False) -> list[Any]:
    messages = [await receive(ws) for _ in range(count)]
    return messages if whole else [m["position"] for m in messages]
