"""Pacing a partition copy to a rate in bytes per second.

Used by :mod:`~millstream.broker.cluster.mover`, one per move. Pure (the caller passes the
time and sleeps), so it is tested without waiting.

Each chunk copied books ``size / rate`` seconds on a schedule that starts when the copy does;
the next fetch waits until the booked time has passed. A copy that goes slower than the rate
(small or no chunks: it caught up) books nothing ahead, so it may go at the rate again at once
but never faster on average; there is no burst. Fetching at most ``chunk_bytes(rate)`` at a
time keeps each step a fraction of a second.
"""

from __future__ import annotations

from typing import Final

# The most one fetch asks for, unthrottled (the source may give one larger batch).
MAX_CHUNK_BYTES: Final = 1024 * 1024
# Chunks per second at most, when throttled: the pace stays smooth at any rate.
_STEPS_PER_S: Final = 4


def chunk_bytes(rate: int | None) -> int:
    """How many bytes to ask for in one fetch at ``rate`` bytes/s (None: unthrottled)."""
    if rate is None:
        return MAX_CHUNK_BYTES
    return max(1, min(MAX_CHUNK_BYTES, rate // _STEPS_PER_S))


class Throttle:
    """Not thread-safe: one copy's task uses it."""

    def __init__(self) -> None:
        self._booked_until: float | None = None

    def delay(self, size: int, rate: int | None, started: float, now: float) -> float:
        """Seconds to wait before the next fetch, having just copied ``size`` bytes with a
        fetch that began at ``started`` (the fetch's own time counts towards the pace)."""
        if rate is None or rate <= 0:
            self._booked_until = None
            return 0.0
        start = started if self._booked_until is None else max(started, self._booked_until)
        self._booked_until = start + size / rate
        return max(0.0, self._booked_until - now)
