"""The copy throttle: the pace averages the rate, never bursts above it, and is free when off."""

from __future__ import annotations

import pytest

from millstream.broker.cluster.throttle import MAX_CHUNK_BYTES, Throttle, chunk_bytes


def test_chunks_are_a_fraction_of_a_second_of_the_rate() -> None:
    assert chunk_bytes(None) == MAX_CHUNK_BYTES
    assert chunk_bytes(400_000) == 100_000
    assert chunk_bytes(10**12) == MAX_CHUNK_BYTES
    assert chunk_bytes(1) == 1


def test_a_steady_copy_goes_at_the_rate() -> None:
    throttle, now, copied = Throttle(), 100.0, 0
    for _ in range(100):
        started = now
        now += 0.01  # each fetch takes 10 ms
        copied += 25_000
        now += throttle.delay(25_000, 100_000, started, now)
    assert abs(copied / (now - 100.0) - 100_000) < 100  # the fetches' time counts towards it


def test_fetches_slower_than_the_rate_do_not_wait() -> None:
    throttle = Throttle()
    assert throttle.delay(1_000, 100_000, started=0.0, now=1.0) == 0.0  # 10 ms booked, 1 s taken
    assert throttle.delay(1_000, 100_000, started=1.0, now=1.001) == pytest.approx(0.009)


def test_no_burst_after_idling() -> None:
    throttle = Throttle()
    throttle.delay(100_000, 100_000, 0.0, 0.0)  # booked until 1.0
    # Idle until 10.0: the next chunk books from its own start, not from the idle past.
    assert throttle.delay(50_000, 100_000, 10.0, 10.0) == 0.5
    assert throttle.delay(50_000, 100_000, 10.5, 10.5) == 0.5


def test_no_rate_means_no_wait_and_forgets_the_booking() -> None:
    throttle = Throttle()
    throttle.delay(100_000, 1_000, 0.0, 0.0)
    assert throttle.delay(10**9, None, 0.0, 0.0) == 0.0
    assert throttle.delay(1_000, 1_000, 5.0, 5.0) == 1.0
