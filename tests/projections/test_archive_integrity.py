"""The archive is tamper-evident: chain v2, an INSERT-only event_log, signed checkpoints.

The attacker here can write to the database as its owner (or a superuser): they disable the
append-only trigger (tests.projections.tampering) and rewrite what they like. They do not
hold the checkpoint signing key.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from events import SYSTEM_TENANT, ChainCheckpoint, Codec, EventProducer, SignedHead
from projections import (
    Checkpointer,
    headers_from_json,
    link_hash,
    load_public_key,
    signer_from_settings,
    verify_archive,
    verify_chain,
)
from projections._checkpoints import checkpoints_from_lines, head_line
from projections._signing import Ed25519Signer, Keyring, generate_signing_key
from tests.events.topic_reader import read_topic
from tests.projections.archive_support import archive_events, archive_rows
from tests.projections.conftest import eventually, submitted
from tests.projections.tampering import tampering
from wrenchai.settings import Settings

SIGNING_KEY = generate_signing_key()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with a checkpoint signing key; checkpoints only when a test asks."""
    return settings.model_copy(
        update={
            "checkpoint_signing_key": SecretStr(SIGNING_KEY),
            "checkpoint_every_records": 1_000_000,
            "checkpoint_interval_s": 3_600.0,
        }
    )


def _public_keyring(settings: Settings) -> Keyring:
    """The keys an auditor holds: the public half only."""
    signer = signer_from_settings(settings)
    assert isinstance(signer, Ed25519Signer)
    return Keyring([load_public_key(signer.verifier().public_pem().encode())])


async def _signed_archive(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> list[SignedHead]:
    """Partition 0 of wrench.events: ten records, a signed checkpoint on the tenth, then
    three more records. Returns the signed heads."""
    await archive_events(
        settings, db, producer, [submitted(f"t{i}") for i in range(10)], partition=0
    )
    signer = signer_from_settings(settings)
    assert signer is not None
    heads = await Checkpointer(settings, signer, producer).checkpoint(db)
    assert [(h.partition, h.offset) for h in heads] == [(0, 9)]
    await archive_events(
        settings, db, producer, [submitted(f"u{i}") for i in range(3)], partition=0
    )
    report = await verify_chain(settings)
    assert report.ok and report.checked == 13 and report.checkpoints == 1, str(report)
    return heads


async def _rewrite_value(db: asyncpg.Connection, offset: int) -> None:
    """Change one record's bytes in place (its timeout) and the columns derived from them."""
    row = await db.fetchrow(
        'SELECT raw_value, payload FROM event_log WHERE partition = 0 AND "offset" = $1', offset
    )
    forged = row["raw_value"].replace(b'"timeout":60', b'"timeout":6000')
    assert forged != row["raw_value"]
    payload = {**row["payload"], "timeout": 6000}
    await db.execute(
        'UPDATE event_log SET raw_value = $1, payload = $2 WHERE partition = 0 AND "offset" = $3',
        forged,
        payload,
        offset,
    )


async def _recompute_chain(db: asyncpg.Connection, topic: str, start: int) -> None:
    """What a careful attacker does next: every hash from ``start`` on, recomputed."""
    rows = await db.fetch(
        'SELECT * FROM event_log WHERE topic = $1 AND partition = 0 AND "offset" >= $2 '
        'ORDER BY "offset"',
        topic,
        start,
    )
    prev = await db.fetchval(
        'SELECT prev_hash FROM event_log WHERE topic = $1 AND partition = 0 AND "offset" = $2',
        topic,
        start,
    )
    for row in rows:
        digest = link_hash(
            row["chain_version"],
            prev,
            row["raw_key"],
            headers_from_json(row["raw_headers"]),
            row["raw_value"],
        )
        await db.execute(
            "UPDATE event_log SET prev_hash = $1, hash = $2 WHERE topic = $3 AND partition = 0 "
            'AND "offset" = $4',
            prev,
            digest,
            topic,
            row["offset"],
        )
        prev = digest


async def test_the_archive_refuses_update_delete_and_truncate(
    db: asyncpg.Connection, codec: Codec, settings: Settings
) -> None:
    """event_log and chain_checkpoints take INSERTs only: UPDATE, DELETE and TRUNCATE are
    refused, even for the owner, with a message that says the archive is append-only."""
    record = codec.encode(submitted())
    await archive_rows(db, codec, settings.topic("events"), 0, [(record, 2)])
    await db.execute(
        """INSERT INTO chain_checkpoints (topic, partition, "offset", hash, chain_version,
               signed_at, algorithm, key_id, signature)
           VALUES ('t', 0, 0, $1, 2, now(), 'ed25519', 'k', '\\x00')""",
        b"\x00" * 32,
    )
    for statement in (
        "UPDATE event_log SET tenant_id = 'mallory'",
        "DELETE FROM event_log",
        "TRUNCATE event_log",
        'UPDATE chain_checkpoints SET "offset" = 5',
        "DELETE FROM chain_checkpoints",
        "TRUNCATE chain_checkpoints",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="is append-only") as caught:
            await db.execute(statement)
        assert "rebuild" in (caught.value.hint or "") or "TRUNCATE" in statement
    assert await db.fetchval("SELECT tenant_id FROM event_log") == "acme"
    assert await db.fetchval("SELECT count(*) FROM chain_checkpoints") == 1


async def test_the_api_role_cannot_write_the_archive(db: asyncpg.Connection) -> None:
    """wrench_api reads event_log and chain_checkpoints and can neither insert, update,
    delete nor truncate them; an INSERT as wrench_api is refused by Postgres."""
    for table in ("event_log", "chain_checkpoints"):
        assert await db.fetchval("SELECT has_table_privilege('wrench_api', $1, 'SELECT')", table)
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not await db.fetchval(
                "SELECT has_table_privilege('wrench_api', $1, $2)", table, privilege
            ), f"wrench_api may {privilege} {table}"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with db.transaction():
            await db.execute("SET LOCAL ROLE wrench_api")
            await db.execute(
                """INSERT INTO event_log (topic, partition, "offset", status, prev_hash, hash)
                   VALUES ('x', 0, 0, 'poison', '\\x00', '\\x00')"""
            )


async def test_rows_from_before_chain_v2_still_verify_and_cannot_be_relabelled(
    db: asyncpg.Connection, codec: Codec, settings: Settings
) -> None:
    """A partition archived under chain v1 that continues under v2 verifies, each row under
    its own rule; relabelling a v2 row as v1 (which covers only the value) is caught."""
    topic = settings.topic("events")
    records = [(codec.encode(submitted(f"t{i}")), 1 if i < 3 else 2) for i in range(5)]
    await archive_rows(db, codec, topic, 0, records)

    report = await verify_archive(db, codec)
    assert report.ok and report.checked == 5, str(report)

    last = records[-1][0]
    async with tampering(db):
        prev = await db.fetchval('SELECT prev_hash FROM event_log WHERE "offset" = 4')
        await db.execute(
            'UPDATE event_log SET chain_version = 1, hash = $1 WHERE "offset" = 4',
            link_hash(1, prev, last.key, last.headers, last.value),
        )
    report = await verify_archive(db, codec)
    assert report.broken is not None and report.broken.offset == 4
    assert "goes back from 2 to 1" in report.broken.problem


async def test_a_checkpoint_is_signed_and_published_on_wrench_admin(
    settings: Settings, topics: dict[str, int], db: asyncpg.Connection, producer: EventProducer
) -> None:
    """After WRENCH_CHECKPOINT_EVERY_RECORDS records the running projector signs each moved
    chain head with Ed25519, stores it in chain_checkpoints and publishes one chain.checkpoint
    on wrench.admin (tenant _system), which it archives in turn; an auditor's public key
    verifies every head, and a head with another hash does not."""
    from projections import run_projector

    settings = settings.model_copy(update={"checkpoint_every_records": 4})
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    try:
        await producer.send_records(
            settings.topic("events"),
            [producer.codec.encode(submitted(f"t{i}")) for i in range(5)],
            partition=1,
        )

        async def checkpoint_archived() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM event_log WHERE type = 'chain.checkpoint'")
            )

        await eventually(checkpoint_archived)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    stored = await db.fetch("SELECT * FROM chain_checkpoints")
    assert [(r["topic"], r["partition"], r["offset"]) for r in stored] == [
        (settings.topic("events"), 1, 4)
    ]
    head_row = await db.fetchrow(
        'SELECT hash FROM event_log WHERE topic = $1 AND partition = 1 AND "offset" = 4',
        settings.topic("events"),
    )
    assert bytes(stored[0]["hash"]) == bytes(head_row["hash"])
    assert stored[0]["algorithm"] == "ed25519" and stored[0]["chain_version"] == 2

    (record,) = await read_topic(settings, settings.topic("admin"), 1)
    assert record.key == SYSTEM_TENANT.encode()
    event = producer.codec.decode(record.value, tuple(record.headers))
    assert event.tenant_id == SYSTEM_TENANT and isinstance(event.payload, ChainCheckpoint)
    assert stored[0]["event_id"] == event.id
    (head,) = event.payload.heads
    assert (head.partition, head.offset, head.hash) == (1, 4, bytes(head_row["hash"]).hex())

    auditor = _public_keyring(settings)
    assert auditor.check_head(head) is None
    forged = head.model_copy(update={"hash": "00" * 32})
    assert "does not verify" in str(auditor.check_head(forged))
    report = await verify_chain(settings, keyring=auditor)
    assert report.ok and report.signatures_checked, str(report)
    # In the table and in the archived event: one signed head, found and matched once.
    assert report.checkpoints == 1


async def test_attack_a_a_record_rewritten_in_place_is_named(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """(a) One record's bytes rewritten in place: verify names exactly that record."""
    await _signed_archive(settings, db, producer)
    async with tampering(db):
        await _rewrite_value(db, 5)
    report = await verify_chain(settings)
    assert report.broken is not None, str(report)
    assert (report.broken.partition, report.broken.offset) == (0, 5)
    assert report.broken.position == "0:5"
    assert "altered" in report.broken.problem


async def test_attack_b_a_rewrite_with_the_chain_recomputed_is_caught_by_the_checkpoint(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """(b) A record rewritten and every later hash recomputed: the chain alone verifies, but
    the head signed before the attack no longer matches. An attacker who also removes the
    checkpoints from the database is still caught by the ones an auditor kept elsewhere."""
    topic = settings.topic("events")
    heads = await _signed_archive(settings, db, producer)
    kept = [orjson.dumps(head_line(h, "projector")).decode() for h in heads]

    async with tampering(db):
        await _rewrite_value(db, 5)
        await _recompute_chain(db, topic, 5)
    report = await verify_chain(settings)
    assert report.broken is not None, str(report)
    assert report.broken.offset == 9  # the signed head; the rewrite happened at or before it
    assert "differs from the checkpoint" in report.broken.problem

    async with tampering(db):
        await db.execute("DELETE FROM chain_checkpoints")
    assert (await verify_chain(settings)).ok  # the chain alone cannot tell
    report = await verify_chain(settings, extra_checkpoints=checkpoints_from_lines(kept))
    assert report.broken is not None and report.broken.offset == 9, str(report)


async def test_attack_c_a_cut_tail_is_caught_by_the_checkpoint(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """(c) The tail cut. Past the last signed head only the projector's stored offsets show
    it, and an attacker can move those back too; a cut that reaches a signed head is caught
    whatever else they change."""
    topic = settings.topic("events")
    await _signed_archive(settings, db, producer)  # offsets 0..12, head signed at 9

    async def cut(start: int) -> None:
        async with tampering(db):
            await db.execute(
                'DELETE FROM event_log WHERE topic = $1 AND partition = 0 AND "offset" >= $2',
                topic,
                start,
            )

    await cut(11)
    report = await verify_chain(settings)
    assert report.broken is not None and report.broken.offset == 11, str(report)
    assert "the projector's stored offsets" in report.broken.problem

    await cut(7)
    await db.execute(
        "UPDATE consumer_offsets SET next_offset = 7 WHERE topic = $1 AND partition = 0", topic
    )
    report = await verify_chain(settings)
    assert report.broken is not None and report.broken.offset == 7, str(report)
    assert "covers offset 9: records were removed from the end" in report.broken.problem


async def test_a_forged_checkpoint_is_reported(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer
) -> None:
    """A checkpoint inserted with a signature of another key (or none) is itself evidence
    of tampering: verify names its position and says it does not verify."""
    heads = await _signed_archive(settings, db, producer)
    moved = heads[0].model_copy(update={"offset": 11})  # the signature covers offset 9
    lines = [orjson.dumps(head_line(moved, "auditor")).decode()]
    report = await verify_chain(settings, extra_checkpoints=checkpoints_from_lines(lines))
    assert report.broken is not None and report.broken.position == "0:11", str(report)
    assert "does not verify" in report.broken.problem
