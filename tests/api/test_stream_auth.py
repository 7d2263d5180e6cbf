"""Who may open a stream, and how streams refuse what they must: credentials in headers, in
the first message and in single-use tickets; refusals (1008) recorded as access.denied; open
streams closed when their credential is revoked or expires; invalid client messages answered
without closing; unknown and other tenants' tasks (4404); bad resume positions (4400); the
per-principal limit (4429, 429 for SSE); the idle timeout and pings; and the agent socket.
All on a real uvicorn, the real broker and real Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from cryptography.fernet import Fernet
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.security import TokenService, new_api_key
from events import Actor, Codec, Event, EventProducer, ThoughtRecorded, create_consumer
from tests.api._streams_support import (
    AGENT,
    completed,
    live_api,
    positions,
    receive,
    submitted,
    thought,
    ws_url,
)
from tests.api._support import seed_api_key
from wrenchai.settings import Settings

PASSWORD = "a long and boring passphrase"
ADMIN_KEY_ID = "stream-admin"

Message = dict[str, Any]
Outcome = tuple[list[Message], int | None, str]
"""What a socket received before the server closed it, the close code and its reason."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short waits: a socket has 1 s to present its credential, an open one rechecks it every
    0.2 s, a task stream starts at once, and an access token is refused from its exp on."""
    return settings.model_copy(
        update={
            "ws_auth_timeout_s": 1.0,
            "ws_start_wait_s": 0.0,
            "ws_recheck_interval_s": 0.2,
            "jwt_leeway_s": 0,
        }
    )


@pytest.fixture
async def api_key(db: asyncpg.Connection, settings: Settings) -> str:
    """An admin key of the default tenant."""
    return await seed_api_key(db, settings, key_id=ADMIN_KEY_ID)


@pytest.fixture
async def api(
    settings: Settings, topics: dict[str, int], db: asyncpg.Connection, api_key: str
) -> AsyncIterator[str]:
    """The API on a real server (tests that need the read models add the projector)."""
    del topics, db, api_key
    async with live_api(settings) as base:
        yield base


# -- helpers -----------------------------------------------------------------------------------
def key_header(token: str) -> dict[str, str]:
    return {"X-API-Key": token}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def text(message: Message | str | bytes) -> str | bytes:
    """A client message as sent: objects as JSON text, anything else as it is."""
    return message if isinstance(message, str | bytes) else orjson.dumps(message).decode()


@contextlib.asynccontextmanager
async def ws(
    base: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    """A WebSocket to ``path`` sending ``headers`` in its handshake."""
    async with connect(ws_url(base, path), additional_headers=headers or {}, close_timeout=1) as c:
        yield c


async def closing(conn: ClientConnection, timeout_s: float = 15.0) -> Outcome:
    """Every message until the server closes the socket, then its close code and reason."""
    messages: list[Message] = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout_s):
            async for raw in conn:
                messages.append(orjson.loads(raw))
    return messages, conn.close_code, conn.close_reason or ""


async def outcome(
    base: str,
    path: str,
    headers: dict[str, str] | None = None,
    send: Sequence[Message | str | bytes] = (),
) -> Outcome:
    """Open ``path``, send each of ``send``, and read until the server closes."""
    async with ws(base, path, headers) as conn:
        for message in send:
            await conn.send(text(message))
        return await closing(conn)


async def next_event(conn: ClientConnection, timeout_s: float = 20.0) -> Message:
    """The next event message, passing over control messages."""
    while True:
        message = await receive(conn, timeout_s)
        if "position" in message:
            return message


def errors(messages: list[Message]) -> list[str]:
    """The codes of the error messages among ``messages``."""
    return [m["error"]["code"] for m in messages if m.get("type") == "error"]


async def admin_events(
    settings: Settings, codec: Codec, partitions: int, kind: str, count: int
) -> list[Event]:
    """The first ``count`` events of ``kind`` on wrench.admin, read from the broker."""
    topic = settings.topic("admin")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = create_consumer(settings)
    await consumer.start()
    found: list[Event] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(20):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        event = codec.decode(record.value, record.headers)
                        if event.type == kind:
                            found.append(event)
    finally:
        await consumer.stop()
    return found


async def create_user(base: str, api_key: str, username: str) -> str:
    """A viewer of the default tenant, signed in: its access token."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        created = await http.post(
            "/users",
            json={"username": username, "password": PASSWORD, "role": "viewer"},
            headers=key_header(api_key),
        )
        assert created.status_code == 201, created.text
        signed = await http.post("/auth/token", data={"username": username, "password": PASSWORD})
        assert signed.status_code == 200, signed.text
    token: str = signed.json()["access_token"]
    return token


def expiring(settings: Settings, token: str, in_s: int) -> str:
    """An access token of the same user and session as ``token`` (signed with the API's key)
    that expires ``in_s`` seconds from now: issued as long ago as that takes."""
    tokens = TokenService(settings)
    claims = tokens.verify(token, "access")
    issued_at = datetime.now(UTC) - timedelta(seconds=settings.access_token_ttl_s - in_s)
    return tokens.issue(
        "access",
        subject=claims.subject,
        tenant_id=claims.tenant_id,
        session_id=claims.session_id,
        now=issued_at,
    ).token


async def ticket(base: str, headers: dict[str, str]) -> str:
    """A ticket from POST /ws-ticket for the credential in ``headers``."""
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        response = await http.post("/ws-ticket")
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 30
    issued: str = response.json()["ticket"]
    return issued


async def admitted(
    base: str, path: str, headers: dict[str, str], attempts: int = 100
) -> ClientConnection:
    """A socket to ``path`` once the principal has a stream to spare (a stream closed by its
    client is released when the server has seen the close), trying every 0.1 s."""
    for _ in range(attempts):
        conn = await connect(ws_url(base, path), additional_headers=headers, close_timeout=1)
        try:
            if (await receive(conn)).get("type") == "live":
                return conn
        except ConnectionClosed:
            assert conn.close_code == 4429, conn.close_reason
        await conn.close()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no stream was admitted again after {attempts} attempts")


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event of ``response`` (comments and pings left out)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
            continue
        if "event" in fields:
            yield fields["event"], fields.get("data", "")
        fields = {}


# -- refusals ----------------------------------------------------------------------------------
async def test_a_stream_without_a_valid_credential_closes_1008_and_is_recorded(
    api: str,
    settings: Settings,
    db: asyncpg.Connection,
    codec: Codec,
    topics: dict[str, int],
) -> None:
    """No credential within the auth timeout, a first message that is not an auth message, a
    bad API key, a bad JWT, a bad token in the first message and a garbled ticket each close
    the socket with 1008; a key without tasks:read is refused naming the scope. Every refusal
    is an access.denied on wrench.admin."""
    narrow = await seed_api_key(db, settings, scopes=["alerts:read"], key_id="alerts-only")
    unknown_key = new_api_key().token
    task = uuid.uuid4()
    cases = {
        "none": outcome(api, f"/ws/tasks/{task}"),
        "chatty": outcome(api, "/ws/events", send=[{"type": "ping"}]),
        "bad key": outcome(api, "/ws/events", key_header(unknown_key)),
        "bad jwt": outcome(api, f"/ws/tasks/{task}", bearer("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
        "bad first": outcome(api, "/ws/events", send=[{"type": "auth", "token": "not.a.jwt"}]),
        "ticket": outcome(api, "/ws/events?ticket=no-such-ticket"),
        "no scope": outcome(api, "/ws/agent/journey-agent", key_header(narrow)),
    }
    results = dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))
    for name, (messages, code, reason) in results.items():
        assert code == 1008, (name, code, reason)
        if name == "no scope":
            assert reason == "this credential lacks the scope tasks:read"
        else:
            assert reason == "authentication failed", (name, reason)
        if name != "chatty":
            assert messages == [], (name, messages)
    assert errors(results["chatty"][0]) == ["unauthenticated"]

    denied = await admin_events(
        settings, codec, topics[settings.topic("admin")], "access.denied", 7
    )
    payloads = [e.payload.model_dump() for e in denied]
    assert sorted((p["reason"], p["credential"]) for p in payloads) == sorted(
        [
            ("invalid_credential", "none"),  # nothing presented
            ("invalid_credential", "none"),  # a ping instead of a credential
            ("invalid_credential", "none"),  # a ticket that is not one
            ("invalid_credential", "api_key"),
            ("invalid_credential", "jwt"),
            ("invalid_credential", "jwt"),  # from the first message
            ("missing_scope", "api_key"),
        ]
    )
    scoped = next(e for e in denied if e.payload.model_dump()["reason"] == "missing_scope")
    assert scoped.tenant_id == "default"
    assert scoped.payload.model_dump()["scope"] == "tasks:read"
    assert scoped.payload.model_dump()["key_id"] == "alerts-only"
    assert {p["path"] for p in payloads} == {
        f"/ws/tasks/{task}",
        "/ws/events",
        "/ws/agent/journey-agent",
    }


@pytest.mark.usefixtures("projector")
async def test_api_keys_and_access_tokens_open_a_stream_by_header_first_message_or_ticket(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """An API key as a bearer token or in the first message, and a signed-in user's access
    token as a bearer token, in the first message or through a ticket, each stream the task's
    whole history and its end."""
    token = await create_user(api, api_key, "streamer@example.com")
    task = uuid.uuid4()
    written = [
        str(p)
        for p in await producer.publish_many([submitted(task), thought(task, 1), completed(task)])
    ]
    path = f"/ws/tasks/{task}"
    from_ticket = await ticket(api, bearer(token))
    cases = {
        "key as bearer": outcome(api, path, bearer(api_key)),
        "key in message": outcome(api, path, send=[{"type": "auth", "token": api_key}]),
        "jwt as bearer": outcome(api, path, bearer(token)),
        "jwt in message": outcome(api, path, send=[{"type": "auth", "token": token}]),
        "jwt ticket": outcome(api, f"{path}?ticket={from_ticket}"),
    }
    for name, (messages, code, reason) in zip(
        cases, await asyncio.gather(*cases.values()), strict=True
    ):
        assert (code, reason) == (1000, "task completed"), (name, messages)
        assert positions(messages) == written, name
        assert messages[-1] == {"type": "end", "status": "completed"}, name


async def test_a_ticket_opens_one_socket_once_and_only_while_its_credential_holds(
    api: str, api_key: str, settings: Settings, db: asyncpg.Connection
) -> None:
    """A ticket from POST /ws-ticket opens a socket with no header; the same ticket again, a
    garbled one, one sealed with another key, and one whose API key has been revoked since
    are refused with 1008."""
    issued = await ticket(api, key_header(api_key))
    async with ws(api, f"/ws/events?ticket={issued}") as conn:
        assert await receive(conn) == {"type": "live"}
    again = await outcome(api, f"/ws/events?ticket={issued}")
    assert again == ([], 1008, "authentication failed")

    garbled = issued[:-6] + ("A" if issued[-6] != "A" else "B") + issued[-5:]
    forged = Fernet(Fernet.generate_key()).encrypt(
        orjson.dumps({"id": str(uuid.uuid4()), "token": api_key, "kind": "api_key"})
    )
    for bad in (garbled, forged.decode(), ""):
        refused = await outcome(api, f"/ws/events?ticket={quote(bad)}")
        assert refused == ([], 1008, "authentication failed"), bad

    doomed = await seed_api_key(db, settings, key_id="revoked-soon")
    kept = await ticket(api, key_header(doomed))
    # As the projector applies apikey.revoked to the read model.
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = 'revoked-soon'")
    async with httpx.AsyncClient(base_url=api, headers=key_header(doomed)) as http:
        for _ in range(100):  # the API trusts what it read of a key for principal_cache_ttl_s
            if (await http.get("/auth/me")).status_code == 401:
                break
            await asyncio.sleep(0.05)
    assert await outcome(api, f"/ws/events?ticket={kept}") == ([], 1008, "credential revoked")


@pytest.mark.usefixtures("projector")
async def test_an_open_stream_ends_when_its_key_is_revoked_or_its_token_expires(
    api: str,
    api_key: str,
    settings: Settings,
    db: asyncpg.Connection,
    producer: EventProducer,
) -> None:
    """A key revoked with DELETE /api-keys/{id} (through the log and the projector) closes
    its socket with 1008 "credential revoked" and ends its SSE stream with an error event; an
    access token that expires closes its socket with 1008 "credential expired", unless the
    client sent a fresh token of the same user first (a token of someone else is refused and
    the socket keeps its own)."""
    doomed = await seed_api_key(db, settings, key_id="doomed")
    fresh = await create_user(api, api_key, "expiring@example.com")
    task = uuid.uuid4()
    await producer.publish(submitted(task))
    sse_seen: list[tuple[str, str]] = []
    sse_open = asyncio.Event()

    async def read_sse() -> None:
        async with httpx.AsyncClient(base_url=api, headers=key_header(doomed), timeout=30) as h:
            async with h.stream("GET", f"/tasks/{task}/stream") as response:
                assert response.status_code == 200
                async for item in sse_events(response):
                    sse_seen.append(item)
                    sse_open.set()

    # Expires once every socket below is open (each answers "live" first).
    stale = expiring(settings, fresh, 3)
    thoughts = "/ws/events?types=thought.recorded"
    async with (
        ws(api, thoughts, key_header(doomed)) as revoked,
        ws(api, thoughts, bearer(stale)) as expired,
        ws(api, thoughts, bearer(stale)) as renewed,
    ):
        for conn in (revoked, expired, renewed):
            assert await receive(conn) == {"type": "live"}
        await renewed.send(text({"type": "auth", "token": fresh}))
        assert await receive(renewed) == {"type": "authenticated"}
        await renewed.send(text({"type": "auth", "token": api_key}))
        assert errors([await receive(renewed)]) == ["forbidden"]
        sse = asyncio.create_task(read_sse())
        await asyncio.wait_for(sse_open.wait(), 15)  # it sent the task's first event

        async with httpx.AsyncClient(base_url=api, headers=key_header(api_key)) as http:
            assert (await http.delete("/api-keys/doomed")).status_code == 204
        assert await closing(revoked) == ([], 1008, "credential revoked")
        await asyncio.wait_for(sse, 15)
        assert sse_seen[-1] == ("error", '{"reason":"revoked_credential"}')

        assert await closing(expired) == ([], 1008, "credential expired")
        await producer.publish(thought(task, 1))
        event = await next_event(renewed)
        assert event["event"]["task_id"] == str(task)
        assert event["event"]["type"] == "thought.recorded"


# -- client messages ---------------------------------------------------------------------------
async def test_invalid_client_messages_are_answered_and_the_stream_goes_on(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """Text that is not JSON, a JSON list, an unknown type, a binary frame, a late
    resume_from and a refused renewal each get an error message; a ping gets a pong; the
    socket stays open and still streams the task's next events and its end."""
    task = uuid.uuid4()
    await producer.publish(submitted(task))
    async with ws(api, f"/ws/tasks/{task}", key_header(api_key)) as conn:
        assert (await receive(conn))["event"]["type"] == "task.submitted"
        assert await receive(conn) == {"type": "live"}
        answers = []
        for message in (
            "not json",
            "[1, 2]",
            {"type": "hello"},
            b'{"type": "ping"}',
            {"resume_from": "0:0"},
            {"type": "ping"},
            {"type": "auth", "token": "wr_nope"},
        ):
            await conn.send(text(message))
            answers.append(await receive(conn))
        assert errors(answers) == [
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "already_started",
            "unauthenticated",
        ]
        assert answers[2]["error"]["details"] == {"received": ["type"]}
        assert answers[5] == {"type": "pong"}
        await producer.publish_many([thought(task, 1), completed(task)])
        messages, code, _ = await closing(conn)
    assert code == 1000
    assert [m.get("event", {}).get("type") for m in messages[:2]] == [
        "thought.recorded",
        "task.completed",
    ]
    assert messages[-1] == {"type": "end", "status": "completed"}


# -- tasks and tenants -------------------------------------------------------------------------
@pytest.mark.usefixtures("projector")
async def test_unknown_and_other_tenants_tasks_close_4404_and_their_events_never_arrive(
    api: str,
    api_key: str,
    settings: Settings,
    db: asyncpg.Connection,
    producer: EventProducer,
) -> None:
    """A task id that names no task, one that is not a UUID and another tenant's task close
    the socket with 4404 (SSE: 404); the tenant's live events never carry another tenant's
    events; an invalid task_id filter is an error message and 4400."""
    other_key = await seed_api_key(db, settings, tenant_id="other", key_id="other-admin")
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    await producer.publish_many([submitted(mine), submitted(theirs, tenant_id="other")])
    # Both tasks exist, each for its own tenant.
    for task, key in ((mine, api_key), (theirs, other_key)):
        async with ws(api, f"/ws/tasks/{task}", key_header(key)) as conn:
            assert (await next_event(conn))["event"]["tenant_id"] in ("default", "other")

    async def sse_status(task: uuid.UUID) -> httpx.Response:
        async with httpx.AsyncClient(base_url=api, headers=key_header(api_key), timeout=30) as h:
            return await h.get(f"/tasks/{task}/stream")

    refusals = await asyncio.gather(
        outcome(api, f"/ws/tasks/{uuid.uuid4()}", key_header(api_key)),
        outcome(api, "/ws/tasks/not-a-uuid", key_header(api_key)),
        outcome(api, f"/ws/tasks/{theirs}", key_header(api_key)),
        outcome(api, f"/ws/tasks/{mine}", key_header(other_key)),
        outcome(api, "/ws/events?task_id=nope", key_header(api_key)),
    )
    for messages, code, reason in refusals[:4]:
        assert (messages, code, reason) == ([], 4404, "no such task")
    messages, code, reason = refusals[4]
    assert errors(messages) == ["invalid_task_id"] and (code, reason) == (4400, "invalid task_id")
    foreign_sse = await sse_status(theirs)
    assert foreign_sse.status_code == 404
    assert foreign_sse.json()["error"]["code"] == "TASK_NOT_FOUND"

    async with (
        ws(api, "/ws/events", key_header(api_key)) as ours,
        ws(api, "/ws/events", key_header(other_key)) as others,
    ):
        assert await receive(ours) == {"type": "live"}
        assert await receive(others) == {"type": "live"}
        await producer.publish_many([thought(mine, n) for n in range(1, 4)])
        seen = [await next_event(ours) for _ in range(3)]
        assert [m["event"]["payload"]["number"] for m in seen] == [1, 2, 3]
        # The hub has routed our thoughts: had they gone to the other tenant's socket, they
        # would come before its own marker.
        marker = await producer.publish(thought(theirs, 99, tenant_id="other"))
        event = await next_event(others)
        assert event["position"] == str(marker)
        assert event["event"]["tenant_id"] == "other"
        own = await producer.publish(thought(mine, 4))
        assert (await next_event(ours))["position"] == str(own)


@pytest.mark.usefixtures("projector")
async def test_resume_from_is_checked_and_may_come_in_the_first_message(
    settings: Settings,
    topics: dict[str, int],
    api_key: str,
    producer: EventProducer,
) -> None:
    """An invalid ?resume_from= or one on another partition is an error message then 4400.
    Without one, the stream waits for a first message: {"resume_from": P} starts after P; a
    position on another partition or not a string is an error and the stream waits for a
    good one; {} or {"resume_from": null} starts at the beginning at once; silence starts at
    the beginning once ws_start_wait_s has passed; a bad place never followed by a good one
    closes 4400 after ws_auth_timeout_s."""
    del topics
    task = uuid.uuid4()
    written = [
        str(p)
        for p in await producer.publish_many(
            [submitted(task), *[thought(task, n) for n in range(1, 6)], completed(task)]
        )
    ]
    partition = int(written[0].split(":")[0])
    elsewhere = f"{(partition + 1) % settings.partitions}:0"
    path, headers = f"/ws/tasks/{task}", key_header(api_key)
    waiting = settings.model_copy(update={"ws_start_wait_s": 1.0})
    async with live_api(waiting) as api:
        results = await asyncio.gather(
            outcome(api, f"{path}?resume_from=garbage", headers),
            outcome(api, f"{path}?resume_from={elsewhere}", headers),
            outcome(api, path, headers, send=[{"resume_from": written[2]}]),
            outcome(
                api,
                path,
                headers,
                send=[{"resume_from": elsewhere}, {"resume_from": written[4]}],
            ),
            outcome(api, path, headers, send=[{"resume_from": 3}, {"resume_from": None}]),
            outcome(api, path, headers, send=[{}]),
            outcome(api, path, headers),
            outcome(api, path, headers, send=[{"resume_from": "garbage"}]),
        )
    for messages, code, reason in results[:2]:
        assert errors(messages) == ["invalid_resume_from"]
        assert (code, reason) == (4400, "invalid resume_from")
    assert "not on this task's partition" in results[1][0][0]["error"]["message"]
    after_2, wrong_then_4, number_then_null, at_once, silent, never_fixed = results[2:]
    assert positions(after_2[0]) == written[3:]
    assert errors(wrong_then_4[0]) == ["invalid_resume_from"]
    assert "not on this task's partition" in wrong_then_4[0][0]["error"]["message"]
    assert positions(wrong_then_4[0]) == written[5:]
    assert errors(number_then_null[0]) == ["invalid_resume_from"]
    assert positions(number_then_null[0]) == written
    assert positions(at_once[0]) == written
    assert positions(silent[0]) == written
    assert {r[1] for r in results[2:-1]} == {1000}
    # A bad place never followed by a good one is not waited for forever.
    assert errors(never_fixed[0]) == ["invalid_resume_from"]
    assert never_fixed[1:] == (4400, "invalid resume_from")


# -- limits and timeouts -----------------------------------------------------------------------
async def test_a_principal_holds_only_so_many_streams(
    settings: Settings,
    topics: dict[str, int],
    db: asyncpg.Connection,
    api_key: str,
    producer: EventProducer,
) -> None:
    """With two streams per principal, a third socket closes with 4429 and a third SSE
    stream is 429; another key is not affected; a closed socket gives its place back."""
    del topics
    other = await seed_api_key(db, settings, key_id="second-key")
    task = uuid.uuid4()
    await producer.publish(submitted(task))
    headers = key_header(api_key)
    async with live_api(settings.model_copy(update={"ws_max_sockets_per_principal": 2})) as api:
        async with (
            ws(api, "/ws/events", headers) as first,
            ws(api, f"/ws/tasks/{task}", headers) as second,
        ):
            assert await receive(first) == {"type": "live"}
            assert (await next_event(second))["event"]["type"] == "task.submitted"
            third = await outcome(api, "/ws/events", headers)
            assert third == ([], 4429, "too many open streams; at most 2")
            async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
                sse = await http.get(f"/tasks/{task}/stream")
            assert sse.status_code == 429
            assert sse.json()["error"]["code"] == "RATE_LIMITED"
            assert "Retry-After" in sse.headers
            async with ws(api, "/ws/events", key_header(other)) as elsewhere:
                assert await receive(elsewhere) == {"type": "live"}
        both = [await admitted(api, "/ws/events", headers) for _ in range(2)]
        await asyncio.gather(*(c.close() for c in both))


async def test_an_sse_stream_whose_client_leaves_gives_its_place_back(
    settings: Settings,
    topics: dict[str, int],
    db: asyncpg.Connection,
    api_key: str,
    producer: EventProducer,
) -> None:
    """With one stream per principal, an SSE client that stops reading and disconnects
    frees the place for a socket."""
    del topics, db
    task = uuid.uuid4()
    await producer.publish(submitted(task))
    headers = key_header(api_key)
    async with live_api(settings.model_copy(update={"ws_max_sockets_per_principal": 1})) as api:
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
            async with http.stream("GET", f"/tasks/{task}/stream") as response:
                assert response.status_code == 200
                async for kind, _ in sse_events(response):
                    assert kind == "event"
                    break
        conn = await admitted(api, "/ws/events", headers, attempts=15)
        await conn.close()


async def test_an_idle_socket_closes_1001_and_pings_come_at_the_ping_interval(
    settings: Settings, topics: dict[str, int], db: asyncpg.Connection, api_key: str
) -> None:
    """A socket on which the client sends nothing and no event flows receives a ping every
    ws_ping_interval_s and is closed with 1001 "idle timeout"; a socket whose client answers
    the pings outlives it."""
    del topics, db
    quick = settings.model_copy(update={"ws_ping_interval_s": 0.25, "ws_idle_timeout_s": 1.5})
    headers = key_header(api_key)
    async with (
        live_api(quick) as api,
        ws(api, "/ws/events", headers) as silent,
        ws(api, "/ws/events", headers) as chatty,
    ):
        assert await receive(chatty) == {"type": "live"}
        idle_closed = asyncio.Event()
        pings_after: list[Message] = []

        async def answer() -> None:
            while True:
                message = await receive(chatty)
                assert message == {"type": "ping"}
                if idle_closed.is_set():
                    pings_after.append(message)
                    if len(pings_after) == 2:
                        return
                await chatty.send(text({"type": "pong"}))

        answering = asyncio.create_task(answer())
        messages, code, reason = await closing(silent)
        idle_closed.set()
        await asyncio.wait_for(answering, 15)
    assert (code, reason) == (1001, "idle timeout")
    assert messages[0] == {"type": "live"}
    assert len(messages) >= 3 and all(m == {"type": "ping"} for m in messages[1:])


# -- agents ------------------------------------------------------------------------------------
async def test_the_agent_socket_streams_that_agents_events_and_answers_status(
    api: str, api_key: str, producer: EventProducer
) -> None:
    """/ws/agent/{id} closes 4404 for an agent that does not exist (its reason fitting a close
    frame whatever the id); for one that does it answers {"action": "status"} with the agent's
    status (not_seen: no heartbeat yet), any other action with an error, and streams the
    events that agent emitted for the tenant and no one else's."""
    headers = key_header(api_key)
    unknown = await outcome(api, "/ws/agent/nobody", headers)
    assert unknown[1] == 4404 and unknown[2].startswith("no agent nobody; agents: super-agent")
    wide = "\u00e9\u00f8\u4e2d" * 20  # two- and three-byte characters
    messages, code, reason = await outcome(api, f"/ws/agent/{quote(wide)}", headers)
    assert (messages, code) == ([], 4404)
    assert reason.startswith("no agent \u00e9\u00f8") and len(reason.encode()) <= 123

    async with ws(api, "/ws/agent/journey-agent", headers) as conn:
        assert await receive(conn) == {"type": "live"}
        await conn.send(text({"action": "status"}))
        status = await receive(conn)
        assert status["type"] == "status"
        assert status["status"]["agent_id"] == "journey-agent"
        assert status["status"]["state"] == "not_seen"
        await conn.send(text({"action": "nope"}))
        assert errors([await receive(conn)]) == ["unknown_action"]

        task = uuid.uuid4()
        other_agent = Actor(kind="agent", id="super-agent")
        written = await producer.publish_many(
            [
                submitted(task),  # a user's
                Event.new(
                    ThoughtRecorded(operation="plan", number=1, text="not mine"),
                    tenant_id="default",
                    actor=other_agent,
                    task_id=task,
                ),
                thought(task, 2, tenant_id="other"),  # the agent's, another tenant's
                thought(task, 3),
                completed(task),
            ]
        )
        events = [await next_event(conn) for _ in range(2)]
    # One partition holds them all, in this order: what came between would have arrived.
    assert [e["position"] for e in events] == [str(written[3]), str(written[4])]
    assert all(e["event"]["actor"] == AGENT.model_dump(mode="json") for e in events)
    assert all(e["event"]["tenant_id"] == "default" for e in events)
