"""What the listings (GET /tasks, GET /alerts) share on the HTTP side: several values for one
filter, time ranges, the ``sort`` parameter and the cursor, each refused with a 422 that names
the parameter. The SQL side is api._keyset."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from api._keyset import Order, PageCursor
from api.errors import InvalidRequest

MAX_FILTER_VALUES = 20
"""More values than any filter has (statuses, levels, codes): a longer list is a mistake."""


def split_commas(values: Any) -> Any:
    """``?status=a,b&status=c`` as ``[a, b, c]``: a filter of several values takes them
    repeated, comma-separated, or both. Left as it is when it is not a list of strings (the
    type check that follows says what is wrong)."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return values
    return [part.strip() for value in values for part in value.split(",")]


def check_range(after: datetime | None, before: datetime | None, *, name: str) -> None:
    """A 422 naming ``query.<name>_before`` when the range ends before it starts."""
    if after is not None and before is not None and before < after:
        raise InvalidRequest(
            f"query.{name}_before",
            f"{name}_before ({before.isoformat()}) is earlier than {name}_after "
            f"({after.isoformat()}): the range [{name}_after, {name}_before) is empty",
        )


def page_order(
    sort: str | None,
    cursor: str | None,
    *,
    orders: Collection[str],
    default: Order,
    id_type: Callable[[str], Any] = str,
) -> tuple[Order, PageCursor | None]:
    """The order to list in and where to start: ``sort`` (``default`` when absent), and the
    decoded ``cursor``. A cursor carries the order it was issued for, so a cursor alone
    continues the listing in its order; a ``sort`` that contradicts it is a 422."""
    after = None
    if cursor is not None:
        try:
            after = PageCursor.decode(cursor, orders=orders, legacy=default, id_type=id_type)
        except ValueError as exc:
            raise InvalidRequest("query.cursor", str(exc)) from exc
    if after is None:
        return (default if sort is None else Order.parse(sort)), None
    if sort is not None and Order.parse(sort) != after.order:
        raise InvalidRequest(
            "query.sort",
            f"the cursor continues a listing sorted by {after.order}, not {sort}: pass "
            f"sort={after.order} with it, or start again without the cursor",
        )
    return after.order, after


def task_id_text(value: str) -> uuid.UUID:
    """A task id as a cursor holds it (checked by PageCursor.decode)."""
    return uuid.UUID(value)
