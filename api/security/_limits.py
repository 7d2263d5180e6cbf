"""Rate limits with the ``limits`` library: moving windows per user name, client address and
principal. Counters live where ``rate_limit_storage`` says: in the process (memory://) or
shared between API processes (redis://)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

DENIED_EVENTS = "60/minute"
"""access.denied events recorded per client address; past it, refusals are only logged, so a
flood of bad credentials cannot flood the log."""


class RateLimits:
    """The API's limits and one strategy over one storage."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.rate_limit_storage
        try:
            storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
            self.login_user = parse(settings.login_rate_limit)
            self.login_address = parse(settings.login_address_rate_limit)
            self.write = parse(settings.write_rate_limit)
        except ValueError as exc:
            raise ConfigurationError(f"invalid rate limit setting: {exc}") from exc
        self.denied_events = parse(DENIED_EVENTS)
        self._strategy = MovingWindowRateLimiter(storage)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Count one; None while under the limit, else the seconds until a retry may pass."""
        if await self._strategy.hit(item, *identifiers):
            return None
        return await self.retry_after(item, *identifiers)

    async def blocked(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Like :meth:`hit` without counting: None when one more would pass."""
        if await self._strategy.test(item, *identifiers):
            return None
        return await self.retry_after(item, *identifiers)

    async def retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self._strategy.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        """Forget the count (a user who signed in starts afresh)."""
        await self._strategy.clear(item, *identifiers)
