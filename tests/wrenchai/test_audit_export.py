"""`wrenchai audit export` writes signed JSON lines that `audit verify --file` checks offline:
a tenant's records in full, other tenants' only as chain links, and any change to the file
named at its first bad record."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from events import Actor, Event, EventProducer, TaskSubmitted
from projections import (
    Checkpointer,
    ExportRefused,
    Keyring,
    export_range,
    load_public_key,
    signer_from_settings,
    verify_export,
)
from projections._signing import Ed25519Signer, HmacKey, generate_signing_key
from tests.projections.archive_support import archive_events
from tests.projections.tampering import tampering
from wrenchai.settings import Settings

SIGNING_KEY = generate_signing_key()
USER = Actor(kind="user", id="alice")
DAY = datetime(2026, 3, 1, tzinfo=UTC)
# The range exported: the first three minutes of DAY.
START, END = DAY, DAY + timedelta(minutes=3)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with a checkpoint signing key; checkpoints only when asked."""
    return settings.model_copy(
        update={
            "checkpoint_signing_key": SecretStr(SIGNING_KEY),
            "checkpoint_every_records": 1_000_000,
            "checkpoint_interval_s": 3_600.0,
        }
    )


def _event(tenant_id: str, minute: int) -> Event:
    return Event.new(
        TaskSubmitted(description=f"{tenant_id} task at {minute}", timeout=60),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
        occurred_at=DAY + timedelta(minutes=minute),
    )


async def _history(settings: Settings, db: asyncpg.Connection, producer: EventProducer) -> None:
    """Partition 0: acme, globex, acme, globex, acme at minutes 0-4, signed at offset 4, then
    acme and globex a day later. Partition 1: acme at minutes 1 and 5, signed at offset 1."""
    p0 = [_event(t, m) for m, t in enumerate(["acme", "globex", "acme", "globex", "acme"])]
    await archive_events(settings, db, producer, p0, partition=0)
    await archive_events(
        settings, db, producer, [_event("acme", 1), _event("acme", 5)], partition=1
    )
    signer = signer_from_settings(settings)
    assert signer is not None
    heads = await Checkpointer(settings, signer, producer).checkpoint(db)
    assert sorted((h.partition, h.offset) for h in heads) == [(0, 4), (1, 1)]
    later = [_event("acme", 24 * 60), _event("globex", 24 * 60)]
    await archive_events(settings, db, producer, later, partition=0)


def _auditor(settings: Settings) -> Keyring:
    signer = signer_from_settings(settings)
    assert isinstance(signer, Ed25519Signer)
    return Keyring([load_public_key(signer.verifier().public_pem().encode())])


async def _export(settings: Settings, path: Path, tenant_id: str | None = "acme") -> None:
    signer = signer_from_settings(settings)
    assert signer is not None
    with path.open("wb") as out:
        await export_range(settings, out, START, END, signer, tenant_id)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def _at(lines: list[dict[str, Any]], kind: str, position: str) -> int:
    return next(
        i
        for i, line in enumerate(lines)
        if line["kind"] == kind and line.get("position") == position
    )


async def test_an_export_holds_the_tenants_records_and_verifies_offline(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, tmp_path: Path
) -> None:
    """The acme export of minutes 0-3: acme's records in range in full (raw bytes and the
    decoded event), everything else between them as links that say nothing of globex, the
    run stretched to the signed head after it, the projector's checkpoint and a fresh one,
    and a signed manifest last. The auditor's public key verifies it; another key does not."""
    await _history(settings, db, producer)
    path = tmp_path / "acme.jsonl"
    await _export(settings, path)

    lines = _lines(path)
    assert lines[0]["kind"] == "export" and lines[0]["tenant"] == "acme"
    assert lines[-1]["kind"] == "manifest"
    chain = [
        (line["kind"], line["position"]) for line in lines if line["kind"] in ("record", "link")
    ]
    assert chain == [
        ("record", "0:0"),
        ("link", "0:1"),  # globex
        ("record", "0:2"),
        ("link", "0:3"),  # globex
        ("link", "0:4"),  # acme at minute 4: out of range, but the signed head is here
        ("record", "1:0"),
        ("link", "1:1"),  # acme at minute 5, the signed head
    ]
    record = lines[_at(lines, "record", "0:2")]
    assert record["event"]["tenant_id"] == "acme"
    assert record["event"]["payload"]["description"] == "acme task at 2"  # decrypted
    assert base64.b64decode(record["key"]) == record["event"]["task_id"].encode()
    assert {"key", "value", "event", "headers"}.isdisjoint(lines[_at(lines, "link", "0:1")])
    assert b"globex" not in path.read_bytes()
    sources = sorted(
        (line["source"], line["position"]) for line in lines if line["kind"] == "checkpoint"
    )
    assert sources == [
        ("export", "0:4"),
        ("export", "1:1"),
        ("projector", "0:4"),
        ("projector", "1:1"),
    ]

    report = verify_export(path, _auditor(settings))
    assert report.ok, str(report)
    assert (report.records, report.links, report.partitions) == (3, 4, 2)
    stranger = Keyring([load_public_key(generate_signing_key().encode())])
    report = verify_export(path, stranger)
    assert not report.ok and "not one of the keys given" in str(report)


def _changed_value(lines: list[dict[str, Any]]) -> int:
    i = _at(lines, "record", "0:2")
    value = base64.b64decode(lines[i]["value"]).replace(b'"timeout":60', b'"timeout":61')
    lines[i]["value"] = base64.b64encode(value).decode()
    return i


def _deleted_line(lines: list[dict[str, Any]]) -> int:
    del lines[_at(lines, "link", "0:1")]
    return _at(lines, "record", "0:2")


def _reordered(lines: list[dict[str, Any]]) -> int:
    i, j = _at(lines, "link", "0:1"), _at(lines, "record", "0:2")
    lines[i], lines[j] = lines[j], lines[i]
    return i


def _forged_checkpoint(lines: list[dict[str, Any]]) -> int:
    """The projector's head moved to what a rewritten chain would need."""
    i = _at(lines, "checkpoint", "0:4")
    lines[i]["hash"] = lines[_at(lines, "link", "0:3")]["hash"]
    return i


def _altered_event(lines: list[dict[str, Any]]) -> int:
    i = _at(lines, "record", "0:0")
    lines[i]["event"]["payload"]["timeout"] = 3_600
    return i


def _recomputed_chain(lines: list[dict[str, Any]]) -> int:
    """A careful forger: the value changed and every later hash of the run recomputed."""
    from projections._archive import chain_hash_v2, link_hash

    lines[_at(lines, "record", "0:2")]["event"]["payload"]["timeout"] = 61
    _changed_value(lines)
    prev = bytes.fromhex(lines[_at(lines, "link", "0:1")]["hash"])
    for position in ("0:2", "0:3", "0:4"):
        line = lines[_at(lines, "record" if position == "0:2" else "link", position)]
        line["prev_hash"] = prev.hex()
        if line["kind"] == "record":
            headers = tuple((n, base64.b64decode(v)) for n, v in line["headers"])
            key, value = base64.b64decode(line["key"]), base64.b64decode(line["value"])
            prev = link_hash(2, prev, key, headers, value)
        else:
            prev = chain_hash_v2(prev, bytes.fromhex(line["digest"]))
        line["hash"] = prev.hex()
    return _at(lines, "link", "0:4")


def _cut_end(lines: list[dict[str, Any]]) -> int:
    del lines[-1]
    return len(lines) - 1


CASES: list[tuple[str, Callable[[list[dict[str, Any]]], int], str | None, str]] = [
    ("changed value", _changed_value, "0:2", "the record was altered"),
    ("deleted line", _deleted_line, "0:2", "expected offset 1 here, found 2"),
    ("reordered lines", _reordered, "0:2", "expected offset 1 here, found 2"),
    ("forged checkpoint", _forged_checkpoint, "0:4", "the signature does not verify"),
    ("altered event", _altered_event, "0:0", "payload.timeout is not the value's"),
    ("recomputed chain", _recomputed_chain, "0:4", "differs from the checkpoint signed"),
    ("cut end", _cut_end, None, "no signed manifest at the end"),
]


async def test_a_tampered_export_is_detected_and_its_first_bad_record_named(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, tmp_path: Path
) -> None:
    """Each way of changing an export after the fact (a value, a line removed, lines
    swapped, a forged checkpoint, a decoded event edited, the chain recomputed by a forger,
    the end cut off) is refused, naming the line and position of the first bad record."""
    await _history(settings, db, producer)
    original = tmp_path / "acme.jsonl"
    await _export(settings, original)
    auditor = _auditor(settings)
    for name, tamper, position, reason in CASES:
        lines = _lines(original)
        index = tamper(lines)
        report = verify_export(_write(tmp_path / f"{name}.jsonl", lines), auditor)
        assert report.problem is not None, name
        assert report.problem.position == position, (name, str(report))
        assert report.problem.line == index + 1, (name, str(report))
        assert reason in report.problem.problem, (name, str(report))


async def test_an_hmac_signed_export_verifies_with_the_same_key_only(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, tmp_path: Path
) -> None:
    """With only WRENCH_CHECKPOINT_HMAC_KEY set, checkpoints and exports carry HMAC-SHA256
    signatures: the same key verifies them, another key does not. Once a record is
    rewritten in the database, export refuses to sign, naming it."""
    settings = settings.model_copy(
        update={"checkpoint_signing_key": None, "checkpoint_hmac_key": SecretStr("shared-key-1")}
    )
    await _history(settings, db, producer)
    path = tmp_path / "all.jsonl"
    await _export(settings, path, tenant_id=None)
    assert {line.get("algorithm") for line in _lines(path) if line["kind"] == "checkpoint"} == {
        "hmac-sha256"
    }
    assert verify_export(path, Keyring([HmacKey(b"shared-key-1")])).ok
    report = verify_export(path, Keyring([HmacKey(b"another-key")]))
    assert not report.ok and "not one of the keys given" in str(report)

    # An archive rewritten in the database is not signed into an export.
    async with tampering(db):
        await db.execute(
            "UPDATE event_log SET raw_value = raw_value || ' '::bytea "
            'WHERE partition = 0 AND "offset" = 2'
        )
    with pytest.raises(ExportRefused, match=r"broken at .*\[0\] offset 2: the record was altered"):
        await _export(settings, tmp_path / "refused.jsonl", tenant_id=None)


def _wrenchai(
    env: dict[str, str], *args: str, stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wrenchai", *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )


async def test_the_export_and_verify_commands_work_offline(
    settings: Settings, db: asyncpg.Connection, producer: EventProducer, tmp_path: Path
) -> None:
    """`audit export --from --to --tenant > FILE` writes an export that verifies and prints
    no secret; `audit verify --file FILE --public-key PEM`, with no database and no broker
    reachable, exits 1 naming the record once a value in the file is changed."""
    await _history(settings, db, producer)
    env = {**os.environ, **settings.to_env(), "WRENCH_LOG_LEVEL": "warning"}
    path = tmp_path / "acme.jsonl"
    with path.open("w") as out:
        exported = await asyncio.to_thread(
            _wrenchai,
            env,
            "audit",
            "export",
            "--from",
            START.isoformat(),
            "--to",
            END.isoformat(),
            "--tenant",
            "acme",
            stdout=out,
        )
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 record(s) and 4 link(s) from 2 partition(s)" in exported.stderr
    assert "PRIVATE KEY" not in exported.stderr and SIGNING_KEY not in path.read_text()

    signer = signer_from_settings(settings)
    assert isinstance(signer, Ed25519Signer)
    pem = tmp_path / "wrench-checkpoints.pem"
    pem.write_text(signer.verifier().public_pem())
    assert verify_export(path, _auditor(settings)).ok  # what the command wrote verifies

    offline = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")} | {
        "WRENCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nothing",
        "WRENCH_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    lines = _lines(path)
    _changed_value(lines)
    _write(path, lines)
    broken = await asyncio.to_thread(
        _wrenchai, offline, "audit", "verify", "--file", str(path), "--public-key", str(pem)
    )
    assert broken.returncode == 1
    assert broken.stdout.startswith("BROKEN: line ")
    assert "position 0:2: the hash does not match" in broken.stdout
