"""Running the read models' statements of a batch in few round trips and little server work.

Each event becomes a handful of statements (SQL and its arguments). Sent one by one, a batch
costs a round trip per statement; sent as one ``executemany`` per run of identical SQL, a
batch of mixed events still costs one per change of SQL, which in a live log is nearly every
event. A :class:`StatementPlan` groups a statement with earlier ones of the same SQL when no
order that matters is broken:

- the statements of one key (an event's Kafka key: its task, or its tenant for events outside
  any task) keep their log order. Kafka orders nothing else: keys that share a partition
  share it by chance, and a rebuild interleaves partitions in another order than the
  projector did, so no read model may depend on the order of different keys' events;
- statements with the same SQL keep their log order among themselves, so that rules such as
  "the first user with a name wins" (a unique column across keys) hold as before.

Statements of different keys and different SQL may swap places. A run of identical SQL always
lands in one group, so a plan never needs more round trips than the runs did.

A group of plain inserts (``INSERT INTO t (...) VALUES (...)`` of parameters and literals,
with at most ``ON CONFLICT ... DO NOTHING``) runs as one ``INSERT ... SELECT`` over arrays of
its arguments, in their order: the same rows as running them one after the other (a later
row that conflicts with an earlier one is skipped either way), for far less work in Postgres
than one execution per row. Every other statement runs as it is written.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from events import Event
from projections._read_model_types import Statement

BULK_MIN_ROWS = 4
"""Fewest rows for which a group of plain inserts runs as one INSERT ... SELECT."""

_TERM = r"(?:\$\d+|'[^']*')"
_PLAIN_INSERT = re.compile(
    r"\s*INSERT\s+INTO\s+(?P<table>[\w.]+)\s*\((?P<columns>[\w\s,\"]+)\)\s*"
    rf"VALUES\s*\((?P<values>\s*{_TERM}\s*(?:,\s*{_TERM}\s*)*)\)\s*"
    r"(?P<conflict>ON\s+CONFLICT\s*(?:\([\w\s,\"]+\))?\s*DO\s+NOTHING)?\s*",
    re.IGNORECASE,
)
_PARAMETER_OR_LITERAL = re.compile(r"\$(\d+)|'[^']*'")

# SQL -> its bulk form, or None when it has none. The forms depend only on the schema, which
# every database of one version shares.
_bulk_forms: dict[str, str | None] = {}


def ordering_key(event: Event) -> Hashable:
    """What an event's statements keep their order within: its Kafka key (the task, or the
    tenant for events outside any task)."""
    return event.task_id if event.task_id is not None else event.tenant_id


@dataclass
class _Group:
    """Statements with one SQL, run together."""

    sql: str
    args: list[tuple[Any, ...]] = field(default_factory=list)


class StatementPlan:
    """Statements in the order they will run, grouped by SQL; see the module's doc."""

    def __init__(self) -> None:
        self.groups: list[_Group] = []
        self._last_of_sql: dict[str, int] = {}
        self._last_of_key: dict[Hashable, int] = {}

    def add(self, key: Hashable, statements: Iterable[Statement]) -> None:
        """Plan one event's statements, after every statement planned for ``key``."""
        after = self._last_of_key.get(key, -1)
        for sql, args in statements:
            index = self._last_of_sql.get(sql, -1)
            if index < 0 or index < after:
                index = len(self.groups)
                self.groups.append(_Group(sql))
                self._last_of_sql[sql] = index
            self.groups[index].args.append(args)
            after = index
        self._last_of_key[key] = after

    async def run(self, conn: asyncpg.Connection) -> None:
        """Run the planned statements: one round trip per group."""
        for group in self.groups:
            bulk = await _bulk_form(conn, group.sql) if len(group.args) >= BULK_MIN_ROWS else None
            if bulk is None:
                await conn.executemany(group.sql, group.args)
            else:
                columns = zip(*group.args, strict=True)
                await conn.execute(bulk, *[list(column) for column in columns])


async def _bulk_form(conn: asyncpg.Connection, sql: str) -> str | None:
    """The INSERT ... SELECT that runs many rows of ``sql`` at once, if it is a plain insert
    whose parameters are all scalars (an array parameter cannot be unnested as one value)."""
    if sql not in _bulk_forms:
        shape = _PLAIN_INSERT.fullmatch(sql)
        types: Sequence[Any] = ()
        if shape is not None:
            types = (await conn.prepare(sql)).get_parameters()
        if shape is None or not types or any(t.kind != "scalar" for t in types):
            _bulk_forms[sql] = None
        else:
            _bulk_forms[sql] = _insert_select(shape, types)
    return _bulk_forms[sql]


def _insert_select(shape: re.Match[str], types: Sequence[Any]) -> str:
    """``INSERT INTO t (cols) SELECT <the VALUES terms over u> FROM unnest(<one array per
    parameter>) WITH ORDINALITY AS u ORDER BY ordinality <conflict clause>``."""
    terms = _PARAMETER_OR_LITERAL.sub(
        lambda m: m[0] if m[1] is None else f"u.p{m[1]}", shape["values"]
    )
    arrays = ", ".join(f'${i}::"{t.schema}"."{t.name}"[]' for i, t in enumerate(types, 1))
    names = ", ".join(f"p{i}" for i in range(1, len(types) + 1))
    return (
        f"INSERT INTO {shape['table']} ({shape['columns']}) "
        f"SELECT {terms} FROM unnest({arrays}) WITH ORDINALITY AS u ({names}, ordinal) "
        f"ORDER BY u.ordinal {shape['conflict'] or ''}"
    )
