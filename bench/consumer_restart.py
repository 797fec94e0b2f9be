"""How much a consumer's restart costs its group, with and without static membership.

Starts a real broker, a producer at 1,000 records/s into 4 partitions, and a group of two
consumers (cooperative-sticky, 10 s sessions, 1 s heartbeats, auto-commit every second). Once
the group is settled, a follower is closed and a new one started in its place, as a rolling
deploy restarts a pod: dynamic members leave and join again; static ones
(``group_instance_id``, the pod's name) take their old place. Over the 12 s after the new
consumer is created it reports the longest pause in the group's consumption, the records
consumed twice, and how many generations the group went through.

Run: ``python bench/consumer_restart.py`` (``--runs N``). Prints one row per run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.takeover import GROUP_OPTIONS, PARTITIONS, WINDOW_S, Following, produce, settled
from millstream.client import Admin, Consumer
from tests.support.broker import BrokerProcess


async def one_run(url: str, static: bool) -> tuple[float, int, int]:
    async with Admin(url) as admin:
        await admin.create_topic("t", partitions=PARTITIONS)
    stop = asyncio.Event()
    producing = asyncio.create_task(produce(url, stop))

    def member(n: int) -> Consumer:
        instance = {"group_instance_id": f"pod-{n}"} if static else {}
        return Consumer(url, client_id=f"member-{n}", **GROUP_OPTIONS, **instance)

    members = [member(0), member(1)]
    for consumer in members:
        consumer.subscribe(["t"])
    following = Following(members)
    try:
        before = (await settled(following))[0]
        # A follower restarts (a leader's restart rebalances once, static or not).
        async with Admin(url) as admin:
            leader = (await admin.describe_group(GROUP_OPTIONS["group_id"])).leader
        ids = [m.group_metadata() for m in members]
        n = next(i for i, g in enumerate(ids) if g is not None and g.member_id != leader)
        await following.stop()
        await members[n].close()  # the pod stops ...
        members[n] = member(n)  # ... and its replacement starts
        members[n].subscribe(["t"])
        following = Following(members, following.consumed)
        back = time.monotonic()
        await asyncio.sleep(WINDOW_S)
        times = [back, *sorted(t for t, _ in following.consumed if t >= back), back + WINDOW_S]
        pause = max(b - a for a, b in itertools.pairwise(times))
        sent = [s for _, s in following.consumed]
        after = (await settled(following))[0]
        assert before is not None and after is not None
        return pause, len(sent) - len(set(sent)), after - before
    finally:
        stop.set()
        await producing
        await following.stop()
        for consumer in members:
            await consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| membership | run | longest pause (s) | records consumed twice | new generations |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for static, run in itertools.product((False, True), range(1, args.runs + 1)):
        with tempfile.TemporaryDirectory(prefix="millstream-bench-") as tmp:
            broker = BrokerProcess(Path(tmp) / "data").start()
            try:
                pause, twice, generations = asyncio.run(one_run(broker.url, static))
            finally:
                broker.stop()
        kind = "static" if static else "dynamic"
        print(f"| {kind} | {run} | {pause:.2f} | {twice} | {generations} |", flush=True)


if __name__ == "__main__":
    main()
