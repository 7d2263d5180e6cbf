"""``wrenchai audit export``: a time range of the archive as JSON lines that verify offline.

The file (docs/audit.md, "Export and offline verification"), one JSON object per line:

1. ``{"kind": "export", ...}``: the format, the range, the tenant, when, and the signing key.
2. Per partition, a contiguous run of offsets in log order: ``record`` lines (the raw key,
   headers and value in base64, the chain fields, and the decoded event) for the records in
   range (and of the tenant, with ``--tenant``), and ``link`` lines (position,
   chain_version, prev_hash, digest, hash) for every other record in between, so continuity
   verifies without revealing them. A run ends at the first projector checkpoint at or after
   its last record in range, when there is one, so a head signed before any tampering pins
   the whole run.
3. ``checkpoint`` lines: the projector's signed heads inside the runs, then one fresh head
   per run, signed now with the same key, on its last record.
4. ``{"kind": "manifest", ...}``, last: the runs (first and last offsets and hashes, counts)
   and the sha256 of every line before it, signed. A line removed, added or changed anywhere
   no longer matches it.

A record is in range when it occurred (``occurred_at``; a record that never decoded: when it
was archived) at or after ``--from`` and before ``--to``. The export checks what it reads as
it goes and refuses to sign an archive whose chain or checkpoints are broken.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, NoReturn

import asyncpg
import orjson

from events import Codec, EventDecodeError, SignedHead, codec_from_settings
from projections._archive import GENESIS_HASH, headers_from_json, link_hash, record_digest
from projections._checkpoints import head_line, stored_checkpoints
from projections._db import connect
from projections._signing import Keyring, Signer, instant, manifest_message, sign_head
from wrenchai.errors import WrenchError
from wrenchai.settings import Settings

FORMAT = "wrench-audit-export"
FORMAT_VERSION = 1
_CHUNK = 1_000

_SPANS = """
SELECT topic, partition, min("offset") AS first, max("offset") AS last
FROM event_log
WHERE coalesce(occurred_at, archived_at) >= $1 AND coalesce(occurred_at, archived_at) < $2
  AND ($3::text IS NULL OR tenant_id = $3)
GROUP BY topic, partition ORDER BY topic, partition
"""

_ROWS = """
SELECT "offset", status, tenant_id, coalesce(occurred_at, archived_at) AS at, raw_key,
       raw_value, raw_headers, error, prev_hash, hash, chain_version
FROM event_log WHERE topic = $1 AND partition = $2 AND "offset" BETWEEN $3 AND $4
ORDER BY "offset"
"""


class ExportRefused(WrenchError):
    """The archive cannot be exported as signed evidence: it is broken where the message says."""

    code = "EXPORT_REFUSED"


@dataclass
class Span:
    """One partition's run of offsets in the export, and what was written of it."""

    topic: str
    partition: int
    first: int
    last: int
    first_prev_hash: bytes = b""
    last_hash: bytes = b""
    last_version: int = 1
    records: int = 0
    links: int = 0

    def manifest(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first": self.first,
            "last": self.last,
            "first_prev_hash": self.first_prev_hash.hex(),
            "last_hash": self.last_hash.hex(),
            "records": self.records,
            "links": self.links,
        }


@dataclass
class ExportReport:
    """What an export wrote."""

    spans: list[Span] = field(default_factory=list)
    checkpoints: int = 0
    skipped_checkpoints: int = 0

    def __str__(self) -> str:
        records = sum(s.records for s in self.spans)
        links = sum(s.links for s in self.spans)
        text = (
            f"exported {records} record(s) and {links} link(s) from {len(self.spans)} "
            f"partition(s), with {self.checkpoints} signed checkpoint(s)"
        )
        if self.skipped_checkpoints:
            text += f"; {self.skipped_checkpoints} checkpoint(s) signed with another key left out"
        return text


async def export_range(
    settings: Settings,
    out: BinaryIO,
    start: datetime,
    end: datetime,
    signer: Signer,
    tenant_id: str | None = None,
) -> ExportReport:
    """Write the export of [start, end) (of ``tenant_id`` only, when given) to ``out``."""
    conn = await connect(settings)
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            writer = _Writer(out)
            exporter = _Exporter(conn, codec_from_settings(settings), signer, writer)
            return await exporter.run(start, end, tenant_id)
    finally:
        await conn.close()


class _Writer:
    """JSON lines to a binary stream, with the running sha256 the manifest signs."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def line(self, data: dict[str, Any]) -> None:
        raw = orjson.dumps(data) + b"\n"
        self.digest.update(raw)
        self.out.write(raw)


class _Exporter:
    def __init__(
        self, conn: asyncpg.Connection, codec: Codec, signer: Signer, writer: _Writer
    ) -> None:
        self.conn = conn
        self.codec = codec
        self.signer = signer
        self.keyring = Keyring([signer.verifier()])
        self.writer = writer
        self.report = ExportReport()
        self.exported_at = datetime.now(UTC)

    async def run(self, start: datetime, end: datetime, tenant_id: str | None) -> ExportReport:
        scope = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "from": instant(start),
            "to": instant(end),
            "tenant": tenant_id,
            "exported_at": instant(self.exported_at),
            "algorithm": self.signer.algorithm,
            "key_id": self.signer.key_id,
        }
        self.writer.line({"kind": "export", **scope})
        spans = [
            Span(r["topic"], r["partition"], r["first"], r["last"])
            for r in await self.conn.fetch(_SPANS, start, end, tenant_id)
        ]
        kept: list[SignedHead] = []
        for span in spans:
            heads = self._ours(await stored_checkpoints(self.conn, span.topic, span.partition))
            after = [h.offset for h in heads if h.offset >= span.last]
            span.last = min(after, default=span.last)
            inside = [h for h in heads if span.first <= h.offset <= span.last]
            await self._span(span, start, end, tenant_id, inside)
            kept += inside
        for head in kept:
            self.writer.line(head_line(head, "projector"))
        for span in spans:
            fresh = sign_head(
                self.signer,
                span.topic,
                span.partition,
                span.last,
                span.last_hash,
                span.last_version,
                self.exported_at,
            )
            self.writer.line(head_line(fresh, "export"))
        self.report.spans = spans
        self.report.checkpoints = len(kept) + len(spans)
        manifest: dict[str, Any] = {
            "kind": "manifest",
            **scope,
            "spans": [s.manifest() for s in spans],
            "body_sha256": self.writer.digest.hexdigest(),
        }
        signature = self.signer.sign(manifest_message(manifest))
        manifest["signature"] = base64.b64encode(signature).decode()
        self.writer.line(manifest)
        return self.report

    def _ours(self, heads: list[SignedHead]) -> list[SignedHead]:
        """The stored heads this key signed, each checked; another key's are left out."""
        ours = []
        for head in heads:
            if (head.algorithm, head.key_id) != (self.signer.algorithm, self.signer.key_id):
                self.report.skipped_checkpoints += 1
                continue
            problem = self.keyring.check_head(head)
            if problem is not None:
                raise ExportRefused(
                    f"the checkpoint of {head.topic}[{head.partition}] at offset {head.offset} "
                    f"signed at {instant(head.signed_at)} is not genuine ({problem}); run "
                    "`wrenchai audit verify`",
                    topic=head.topic,
                    partition=head.partition,
                    offset=head.offset,
                )
            ours.append(head)
        return ours

    async def _span(
        self,
        span: Span,
        start: datetime,
        end: datetime,
        tenant_id: str | None,
        heads: list[SignedHead],
    ) -> None:
        signed = {h.offset: h for h in heads}
        prev: bytes | None = None
        cursor = await self.conn.cursor(_ROWS, span.topic, span.partition, span.first, span.last)
        expected = span.first
        while rows := await cursor.fetch(_CHUNK):
            await self.codec.prepare_records(r["raw_value"] for r in rows)
            for row in rows:
                offset = row["offset"]
                if offset != expected:
                    self._refuse(span, expected, f"offset {expected} is missing")
                if prev is None:
                    span.first_prev_hash = prev = bytes(row["prev_hash"])
                    if offset == 0 and prev != GENESIS_HASH:
                        self._refuse(span, offset, "the first record does not start the chain")
                self._check(span, row, prev, signed.get(offset))
                in_range = start <= row["at"] < end and tenant_id in (None, row["tenant_id"])
                self.writer.line(self._record(span, row) if in_range else self._link(span, row))
                if in_range:
                    span.records += 1
                else:
                    span.links += 1
                prev = bytes(row["hash"])
                expected += 1
            span.last_hash = bytes(rows[-1]["hash"])
            span.last_version = rows[-1]["chain_version"]
        if expected != span.last + 1:
            self._refuse(span, expected, f"offset {expected} is missing")

    def _check(self, span: Span, row: asyncpg.Record, prev: bytes, head: SignedHead | None) -> None:
        if bytes(row["prev_hash"]) != prev:
            self._refuse(span, row["offset"], "prev_hash does not match the previous hash")
        computed = link_hash(
            row["chain_version"],
            prev,
            row["raw_key"],
            headers_from_json(row["raw_headers"]),
            row["raw_value"],
        )
        if computed != row["hash"]:
            self._refuse(span, row["offset"], "the record was altered")
        if head is not None and head.hash != bytes(row["hash"]).hex():
            self._refuse(span, row["offset"], "the record differs from its signed checkpoint")

    def _refuse(self, span: Span, offset: int, problem: str) -> NoReturn:
        raise ExportRefused(
            f"the archive is broken at {span.topic}[{span.partition}] offset {offset}: "
            f"{problem}; nothing broken is signed. Run `wrenchai audit verify`",
            topic=span.topic,
            partition=span.partition,
            offset=offset,
        )

    def _record(self, span: Span, row: asyncpg.Record) -> dict[str, Any]:
        headers = headers_from_json(row["raw_headers"])
        event: dict[str, Any] | None = None
        error = row["error"]
        try:
            event = self.codec.decode(row["raw_value"], headers).model_dump(mode="json")
        except EventDecodeError as exc:
            error = error or f"{exc.reason}: {exc.message}"
        return {
            "kind": "record",
            **_where(span, row),
            "status": row["status"],
            "chain_version": row["chain_version"],
            "prev_hash": bytes(row["prev_hash"]).hex(),
            "hash": bytes(row["hash"]).hex(),
            "key": _b64(row["raw_key"]),
            "headers": [[name, _b64(value)] for name, value in headers],
            "value": _b64(row["raw_value"]),
            "event": event,
            "error": error,
        }

    def _link(self, span: Span, row: asyncpg.Record) -> dict[str, Any]:
        digest = None
        if row["chain_version"] >= 2:
            headers = headers_from_json(row["raw_headers"])
            digest = record_digest(row["raw_key"], headers, row["raw_value"]).hex()
        return {
            "kind": "link",
            **_where(span, row),
            "chain_version": row["chain_version"],
            "prev_hash": bytes(row["prev_hash"]).hex(),
            "digest": digest,
            "hash": bytes(row["hash"]).hex(),
        }


def _where(span: Span, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "topic": span.topic,
        "partition": span.partition,
        "offset": row["offset"],
        "position": f"{span.partition}:{row['offset']}",
    }


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()
