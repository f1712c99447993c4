"""Per-endpoint rate limiting: a token bucket with injectable time, so tests need not sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """A per-endpoint rate limit: at most ``rate_per_s`` starts per second, bursts of one second."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate_per_s = rate_per_s
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = max(rate_per_s, 1.0)
        self._stamp = monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for the next start this endpoint is allowed."""
        async with self._lock:
            now = self._monotonic()
            burst = max(self.rate_per_s, 1.0)
            self._tokens = min(burst, self._tokens + (now - self._stamp) * self.rate_per_s)
            self._stamp = now
            if self._tokens < 1.0:
                wait_s = (1.0 - self._tokens) / self.rate_per_s
                await self._sleep(wait_s)
                self._stamp += wait_s  # the token earned while waiting is the one taken now
                self._tokens = 1.0
            self._tokens -= 1.0
