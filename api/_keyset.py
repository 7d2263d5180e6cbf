"""Keyset pagination for the listings (GET /tasks, GET /alerts): an order, the cursor that
carries it between pages, the filters as SQL conditions, and one page of rows.

A page is the rows after the previous page's last row in the listing's order, found through
an index on (tenant, time column, id): a page costs the same however deep it is, and a row
inserted between two pages neither repeats a row nor hides one (the order is total, since
the id breaks ties, and the cursor names a place in it, not a count of rows to skip).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

_NOT_OURS = "not a cursor from this API; pass next_cursor back as is"


@dataclass(frozen=True)
class Order:
    """A listing's order: a time column, and which way. ``-created_at`` is newest first,
    ``created_at`` oldest first; the row's id breaks ties, the same way."""

    column: str
    descending: bool = True

    @classmethod
    def parse(cls, text: str) -> Order:
        """``-column`` (descending) or ``column`` (ascending)."""
        return cls(text.removeprefix("-"), text.startswith("-"))

    def __str__(self) -> str:
        return f"-{self.column}" if self.descending else self.column


@dataclass(frozen=True)
class PageCursor:
    """Where a page ended: the listing's order and its last row's (time, id) key.

    Clients get it opaque (base64url of a small JSON object) and pass it back as is."""

    order: Order
    at: datetime
    id: str

    def encode(self) -> str:
        """The opaque form handed to clients."""
        raw = orjson.dumps({"order": str(self.order), "after": [self.at.isoformat(), self.id]})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(
        cls,
        text: str,
        *,
        orders: Collection[str],
        legacy: Order,
        id_type: Callable[[str], Any] = str,
    ) -> PageCursor:
        """Read a cursor this API issued for one of ``orders``; ValueError for anything
        else. A cursor from before orders were encoded (a bare ``[time, id]`` pair) is read
        as one of ``legacy``. ``id_type`` checks the id (``uuid.UUID`` for tasks)."""
        try:
            raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            if isinstance(raw, list):
                raw = {"order": str(legacy), "after": raw}
            order, (at, row_id) = raw["order"], raw["after"]
            if order not in orders or not isinstance(row_id, str):
                raise ValueError(order)
            id_type(row_id)
            cursor = cls(Order.parse(order), datetime.fromisoformat(at), row_id)
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(_NOT_OURS) from exc
        if cursor.at.tzinfo is None:
            raise ValueError(_NOT_OURS)
        return cursor


@dataclass
class Conditions:
    """A WHERE clause built a condition at a time, each with its own arguments.

    ``add("status = ANY({})", statuses)`` numbers the placeholders ($1, $2, ...) in the
    order they are added, so a condition is written once, whatever comes before it."""

    sql: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, template: str, *values: Any) -> None:
        """Add ``template`` with one ``{}`` per value."""
        places = []
        for value in values:
            self.args.append(value)
            places.append(f"${len(self.args)}")
        self.sql.append(template.format(*places))

    def where(self) -> str:
        """The conditions joined, or TRUE when there are none."""
        return " AND ".join(self.sql) or "TRUE"


async def keyset_rows(
    conn: asyncpg.Connection,
    *,
    table: str,
    columns: str,
    id_column: str,
    conditions: Conditions,
    order: Order,
    after: Sequence[Any] | None,
    limit: int,
) -> tuple[list[asyncpg.Record], bool]:
    """One page of ``table`` in ``order`` (ties broken by ``id_column``) after the key
    ``after`` (the previous page's last (time, id)), and whether a next page exists."""
    where = Conditions(list(conditions.sql), list(conditions.args))
    time_column = order.column
    if after is not None:
        # A row comparison: the index on (tenant, time, id) seeks straight to the place.
        compare = "<" if order.descending else ">"
        where.add(f"({time_column}, {id_column}) {compare} ({{}}, {{}})", *after)
    direction = "DESC" if order.descending else "ASC"
    where.args.append(limit + 1)  # one more than asked tells whether a next page exists
    rows = await conn.fetch(
        f"SELECT {columns} FROM {table} WHERE {where.where()} "
        f"ORDER BY {time_column} {direction}, {id_column} {direction} LIMIT ${len(where.args)}",
        *where.args,
    )
    return rows[:limit], len(rows) > limit
