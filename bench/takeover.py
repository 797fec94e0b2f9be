"""How long a consumer group stops consuming when its coordinator is killed and comes back.

Starts a real broker, a producer sending 1,000 records/s into 4 partitions, and a group of two
consumers (the Python client, cooperative-sticky, 10 s sessions, 1 s heartbeats) following
them. Once the group is settled, the broker is killed (``kill -9``) and started again on the
same data directory and port: the group's coordinator is gone and back, as when its offsets
partition moves to another broker. Measured over the 12 s from the moment the restarted broker
answers:

- the longest pause in consumption (members that lose their partitions stop reading them
  until a rebalance hands them out again);
- records consumed twice (read again from the last committed offset after a rebalance);
- whether the group rebalanced (its generation after, against before).

Run: ``python bench/takeover.py`` (``--runs 5``). Prints one row per run, then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from millstream import errors
from millstream.client import Admin, Consumer, Producer
from tests.support.broker import BrokerProcess

PARTITIONS = 4
RATE = 1_000  # records/s
WINDOW_S = 12.0
GROUP_OPTIONS = {
    "group_id": "takeover",
    "auto_offset_reset": "earliest",
    "assignors": ("cooperative-sticky",),
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "retry_backoff_ms": 50,
    "retry_backoff_max_ms": 200,
}


class Following:
    """Two group members polling in tasks; when each record was consumed."""

    def __init__(
        self, members: list[Consumer], consumed: list[tuple[float, int]] | None = None
    ) -> None:
        self.members = members
        # (monotonic time, send time in ns); carried over when the members change
        self.consumed: list[tuple[float, int]] = [] if consumed is None else consumed
        self._tasks = [asyncio.create_task(self._poll(m)) for m in members]

    async def _poll(self, member: Consumer) -> None:
        while True:
            try:
                records = await member.poll(timeout_ms=200)
            except errors.MillstreamError:
                await asyncio.sleep(0.05)  # the broker is down: the client retries
                continue
            now = time.monotonic()
            self.consumed += [(now, int(r.value or b"0")) for r in records]

    def generations(self) -> list[int | None]:
        found = [m.group_metadata() for m in self.members]
        return [None if g is None else g.generation for g in found]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def produce(url: str, stop: asyncio.Event) -> None:
    async with Producer(url, linger_ms=5, retry_backoff_ms=50) as producer:
        interval, next_at = 1 / RATE, time.monotonic()
        while not stop.is_set():
            await producer.send("t", str(time.monotonic_ns()).encode())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def settled(following: Following, deadline_s: float = 30.0) -> list[int | None]:
    """The members' generations once both hold one and they agree, and records flow."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        generations = following.generations()
        recent = [t for t, _ in following.consumed[-50:]]
        flowing = recent and time.monotonic() - recent[-1] < 0.5
        if None not in generations and len(set(generations)) == 1 and flowing:
            await asyncio.sleep(2.0)  # one more cooperative round may follow: let it
            if following.generations() == generations:
                return generations
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the group did not settle: {following.generations()}")


async def one_run(broker: BrokerProcess) -> tuple[float, int, bool]:
    url = broker.url
    async with Admin(url) as admin:
        await admin.create_topic("t", partitions=PARTITIONS)
    stop = asyncio.Event()
    producing = asyncio.create_task(produce(url, stop))
    members = [Consumer(url, client_id=f"member-{i}", **GROUP_OPTIONS) for i in range(2)]
    for member in members:
        member.subscribe(["t"])
    following = Following(members)
    try:
        before = await settled(following)
        broker.kill()
        broker.start()  # same data directory and port
        back = time.monotonic()
        await asyncio.sleep(WINDOW_S)
        times = [back, *sorted(t for t, _ in following.consumed if t >= back), back + WINDOW_S]
        pause = max(b - a for a, b in itertools.pairwise(times))
        sent = [s for _, s in following.consumed]
        twice = len(sent) - len(set(sent))
        after = await settled(following)
        return pause, twice, after != before
    finally:
        stop.set()
        await producing
        await following.stop()
        for member in members:
            await member.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pauses: list[float] = []
    repeats: list[int] = []
    print("| run | longest pause (s) | records consumed twice | rebalanced |")
    print("| ---: | ---: | ---: | --- |")
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="millstream-bench-") as tmp:
            broker = BrokerProcess(Path(tmp) / "data").start()
            try:
                pause, twice, rebalanced = asyncio.run(one_run(broker))
            finally:
                broker.stop()
        pauses.append(pause)
        repeats.append(twice)
        print(f"| {run} | {pause:.2f} | {twice} | {'yes' if rebalanced else 'no'} |", flush=True)
    print(
        f"\nmedians: longest pause {statistics.median(pauses):.2f} s, "
        f"{statistics.median(repeats):.0f} records consumed twice"
    )


if __name__ == "__main__":
    main()
