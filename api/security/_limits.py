"""Rate limits: moving windows per user name, client address and principal, in the ``limits``
library's notation (``120/minute``). Counters live where ``rate_limit_storage`` says: in the
process (memory://) or shared between API processes (redis://, through ``limits``).

In the process, the windows are :class:`MovingWindows` rather than ``limits``' async memory
storage: that one holds a key's lock across a thread hop (``asyncio.to_thread``) in the expiry
pass it schedules on every hit (its fix for alisaifee/limits#277), so a burst of writes from one
principal queued behind thread hops. The counting is the same: at most the limit's amount of
hits in any window of its length, and a refused caller is told when the oldest hit in the
window leaves it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

DENIED_EVENTS = "60/minute"
"""access.denied events recorded per client address; past it, refusals are only logged, so a
flood of bad credentials cannot flood the log."""

IN_PROCESS = ("memory://", "async+memory://")


class MovingWindows:
    """Exact moving windows kept in this process, for one event loop: each key's hits within
    its window, oldest first. Nothing here awaits, so no lock is needed.

    A key whose window has emptied is dropped on a sweep every ``sweep_interval_s``, so keys
    nobody uses again (made-up user names, addresses) do not stay in memory.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sweep_interval_s: float = 10.0
    ) -> None:
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._swept_at = clock()
        # key -> (window length in seconds, the times of its hits within it, oldest first)
        self._windows: dict[str, tuple[float, deque[float]]] = {}

    def hit(self, item: RateLimitItem, key: str) -> float | None:
        """Count one hit: None while under the limit, else the seconds until one may pass."""
        now = self._clock()
        self._sweep(now)
        hits = self._window(item, key, now)
        if len(hits) < item.amount:
            hits.append(now)
            return None
        return hits[0] + item.get_expiry() - now

    def blocked(self, item: RateLimitItem, key: str) -> float | None:
        """Like :meth:`hit` without counting: None when one more would pass."""
        now = self._clock()
        hits = self._window(item, key, now)
        if len(hits) < item.amount:
            return None
        return hits[0] + item.get_expiry() - now

    def clear(self, key: str) -> None:
        """Forget the key's hits."""
        self._windows.pop(key, None)

    def _window(self, item: RateLimitItem, key: str, now: float) -> deque[float]:
        expiry = float(item.get_expiry())
        found = self._windows.get(key)
        if found is None:
            hits: deque[float] = deque()
            self._windows[key] = (expiry, hits)
            return hits
        hits = found[1]
        cutoff = now - expiry
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        if now - self._swept_at < self._sweep_interval_s:
            return
        self._swept_at = now
        for key, (expiry, hits) in list(self._windows.items()):
            if not hits or hits[-1] <= now - expiry:
                del self._windows[key]


class RateLimits:
    """The API's limits, counted in this process or in a shared ``limits`` storage."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.rate_limit_storage
        try:
            self.login_user = parse(settings.login_rate_limit)
            self.login_address = parse(settings.login_address_rate_limit)
            self.write = parse(settings.write_rate_limit)
            self._local = MovingWindows() if uri in IN_PROCESS else None
            self._shared = (
                None
                if self._local is not None
                else MovingWindowRateLimiter(
                    storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
                )
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid rate limit setting: {exc}") from exc
        self.denied_events = parse(DENIED_EVENTS)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Count one; None while under the limit, else the seconds until a retry may pass."""
        if self._local is not None:
            return _seconds(self._local.hit(item, item.key_for(*identifiers)))
        assert self._shared is not None
        if await self._shared.hit(item, *identifiers):
            return None
        return await self._retry_after(item, *identifiers)

    async def blocked(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Like :meth:`hit` without counting: None when one more would pass."""
        if self._local is not None:
            return _seconds(self._local.blocked(item, item.key_for(*identifiers)))
        assert self._shared is not None
        if await self._shared.test(item, *identifiers):
            return None
        return await self._retry_after(item, *identifiers)

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        """Forget the count (a user who signed in starts afresh)."""
        if self._local is not None:
            self._local.clear(item.key_for(*identifiers))
            return
        assert self._shared is not None
        await self._shared.clear(item, *identifiers)

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        assert self._shared is not None
        stats = await self._shared.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _seconds(wait: float | None) -> int | None:
    """A wait as Retry-After says it: whole seconds, at least one."""
    return None if wait is None else max(1, math.ceil(wait))
