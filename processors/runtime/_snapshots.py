"""A worker's snapshot of one partition: the records of its tasks in flight and the offset
they cover, kept in Postgres (table ``worker_snapshots``).

A snapshot holds records as they are on the log (key, value, headers, offset), not the
folded state: encrypted fields stay encrypted at rest, a shredded tenant's records stop
decoding as they do on the log, and every agent's state type restores with the same code,
its own ``evolve``. On assignment a worker folds the snapshot's records, then the log from
the snapshot's offset on, so a restart costs the tasks in flight and what came after the
last snapshot, never the whole history.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import asyncpg
import structlog

from events import Record
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

_RECORD = struct.Struct(">qiiH")  # offset, key length (-1: none), value length, headers
_HEADER = struct.Struct(">Hi")  # name length, value length (-1: none)


@dataclass(frozen=True)
class Snapshot:
    """``records`` (offset order) of the tasks in flight before ``offset``."""

    offset: int
    records: list[tuple[int, Record]]
    tasks: int = 0


def pack(records: Iterable[tuple[int, Record]]) -> bytes:
    """The records in one compressed blob."""
    out = bytearray()
    for offset, record in records:
        key = record.key
        out += _RECORD.pack(
            offset, -1 if key is None else len(key), len(record.value), len(record.headers)
        )
        if key is not None:
            out += key
        out += record.value
        for name, value in record.headers:
            raw = name.encode()
            out += _HEADER.pack(len(raw), -1 if value is None else len(value))
            out += raw
            if value is not None:
                out += value
    return zlib.compress(bytes(out), 1)


def unpack(blob: bytes) -> Iterator[tuple[int, Record]]:
    """The records :func:`pack` put in ``blob``, in order."""
    data = memoryview(zlib.decompress(blob))
    at = 0
    while at < len(data):
        offset, key_len, value_len, count = _RECORD.unpack_from(data, at)
        at += _RECORD.size
        key = None if key_len < 0 else bytes(data[at : at + key_len])
        at += max(key_len, 0)
        value = bytes(data[at : at + value_len])
        at += value_len
        headers = []
        for _ in range(count):
            name_len, header_len = _HEADER.unpack_from(data, at)
            at += _HEADER.size
            name = bytes(data[at : at + name_len]).decode()
            at += name_len
            headers.append((name, None if header_len < 0 else bytes(data[at : at + header_len])))
            at += max(header_len, 0)
        yield offset, Record(key=key, value=value, headers=tuple(headers))


class SnapshotStore:
    """Reads and writes snapshots of one consumer group's partitions."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self._pool: asyncpg.Pool | None = None

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.settings.database_url.get_secret_value(), min_size=1, max_size=2
            )
        return self._pool

    async def load(self, partition: int) -> Snapshot | None:
        """The partition's last snapshot; None when there is none."""
        pool = await self._connect()
        try:
            row = await pool.fetchrow(
                "SELECT log_offset, tasks, records FROM worker_snapshots "
                "WHERE consumer_group = $1 AND partition = $2",
                self.group,
                partition,
            )
        except asyncpg.UndefinedTableError:
            log.warning("no worker_snapshots table (run the migrations); replaying the log")
            return None
        if row is None:
            return None
        return Snapshot(row["log_offset"], list(unpack(row["records"])), row["tasks"])

    async def save(self, partition: int, snapshot: Snapshot) -> None:
        """Replace the partition's snapshot with ``snapshot`` (never with an older one)."""
        pool = await self._connect()
        await pool.execute(
            "INSERT INTO worker_snapshots "
            "(consumer_group, partition, log_offset, tasks, records, taken_at) "
            "VALUES ($1, $2, $3, $4, $5, now()) "
            "ON CONFLICT (consumer_group, partition) DO UPDATE SET "
            "log_offset = EXCLUDED.log_offset, tasks = EXCLUDED.tasks, "
            "records = EXCLUDED.records, taken_at = EXCLUDED.taken_at "
            "WHERE worker_snapshots.log_offset <= EXCLUDED.log_offset",
            self.group,
            partition,
            snapshot.offset,
            snapshot.tasks,
            pack(snapshot.records),
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
