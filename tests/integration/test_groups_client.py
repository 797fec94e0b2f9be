"""Consumer groups through the Python client, against real broker processes: members share
partitions, rebalance as they come and go, commit, and the admin API manages groups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from millstream import errors
from millstream.client import (
    Admin,
    Consumer,
    ConsumerRecord,
    OffsetAndMetadata,
    Producer,
    ProducerRecord,
    SyncConsumer,
    TopicPartition,
)
from tests.support.broker import BrokerProcess
from tests.support.http import call

EXAMPLE = Path(__file__).parents[2] / "examples" / "group_consumer.py"
# Short sessions keep the tests short; the broker's minimum is 1 s.
FAST: dict[str, Any] = {
    "session_timeout_ms": 1_500,
    "heartbeat_interval_ms": 200,
    "auto_offset_reset": "earliest",
    "fetch_max_wait_ms": 100,
}


def tps(topic: str, *partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in partitions}


async def setup_topic(url: str, topic: str, partitions: int, records: int = 0) -> None:
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions)
    await produce(url, topic, records, partitions)


async def produce(url: str, topic: str, count: int, partitions: int, start: int = 0) -> None:
    """``count`` records spread evenly over the partitions, values numbered from ``start``."""
    if count:
        async with Producer(url) as producer:
            records = [
                ProducerRecord(b"%d" % i, partition=i % partitions)
                for i in range(start, start + count)
            ]
            await (await producer.send_many(topic, records))


class Polling:
    """Polls every consumer together (as separate applications would) and keeps what each got."""

    def __init__(self, *consumers: Consumer) -> None:
        self.consumers = list(consumers)
        self.got: dict[Consumer, list[ConsumerRecord]] = {c: [] for c in consumers}

    async def until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out; assignments: " + ", ".join(
                str(sorted(c.assignment())) for c in self.consumers
            )
            results = await asyncio.gather(*(c.poll(timeout_ms=100) for c in self.consumers))
            for consumer, records in zip(self.consumers, results, strict=True):
                self.got[consumer] += records

    def total(self) -> int:
        return sum(len(records) for records in self.got.values())

    def stable(self, partitions: set[TopicPartition]) -> Callable[[], bool]:
        """Every consumer has partitions, none twice, all of them given out."""

        def check() -> bool:
            owned = [c.assignment() for c in self.consumers]
            return all(owned) and sum(map(len, owned)) == len(partitions) == len(
                set().union(*owned)
            )

        return check


@pytest.mark.parametrize("assignors", [("cooperative-sticky",), ("range",), ("roundrobin",)])
async def test_two_members_split_the_partitions_and_read_every_record_once(
    broker: BrokerProcess, assignors: Sequence[str]
) -> None:
    await setup_topic(broker.url, "orders", 4, records=100)
    async with (
        Consumer(broker.url, group_id="g", assignors=assignors, **FAST) as one,
        Consumer(broker.url, group_id="g", assignors=assignors, **FAST) as two,
    ):
        one.subscribe(["orders"])
        two.subscribe(["orders"])
        polling = Polling(one, two)
        await polling.until(polling.stable(tps("orders", 0, 1, 2, 3)))
        assert len(one.assignment()) == len(two.assignment()) == 2
        await produce(broker.url, "orders", 100, 4, start=100)
        await polling.until(lambda: polling.total() >= 200)
        quiet = time.monotonic() + 0.5  # anything delivered twice would show up meanwhile
        await polling.until(lambda: time.monotonic() > quiet)

        places = Counter((r.partition, r.offset) for c in polling.got for r in polling.got[c])
        assert len(places) == 200 and set(places.values()) == {1}
        # After the split, each member read only its own partitions.
        late = {
            c: {r.partition for r in polling.got[c] if int(r.value or b"0") >= 100}
            for c in polling.got
        }
        assert late[one] == {tp.partition for tp in one.assignment()}
        assert late[two] == {tp.partition for tp in two.assignment()}
        metadata = [one.group_metadata(), two.group_metadata()]
        assert metadata[0] is not None and metadata[1] is not None
        assert metadata[0].generation == metadata[1].generation >= 2
        assert metadata[0].member_id != metadata[1].member_id


@pytest.mark.parametrize("cooperative", [True, False])
async def test_members_coming_and_going_are_told_what_they_gain_and_lose(
    broker: BrokerProcess, cooperative: bool
) -> None:
    await setup_topic(broker.url, "jobs", 4)
    assignors = ("cooperative-sticky",) if cooperative else ("range",)
    events: list[tuple[str, str, set[TopicPartition]]] = []

    def recorder(name: str, what: str) -> Callable[[set[TopicPartition]], None]:
        return lambda partitions: events.append((name, what, set(partitions)))

    async def on_assign_two(partitions: set[TopicPartition]) -> None:  # a coroutine works too
        events.append(("two", "assign", set(partitions)))

    one = Consumer(broker.url, group_id="g", assignors=assignors, **FAST)
    two = Consumer(broker.url, group_id="g", assignors=assignors, **FAST)
    one.subscribe(
        ["jobs"], on_assign=recorder("one", "assign"), on_revoke=recorder("one", "revoke")
    )
    try:
        await Polling(one).until(lambda: len(one.assignment()) == 4)
        assert events == [("one", "assign", tps("jobs", 0, 1, 2, 3))]
        events.clear()

        two.subscribe(["jobs"], on_assign=on_assign_two, on_revoke=recorder("two", "revoke"))
        both = Polling(one, two)
        await both.until(both.stable(tps("jobs", 0, 1, 2, 3)))
        moved = two.assignment()
        assert len(moved) == 2
        given = [(n, w, p) for n, w, p in events if p]  # on_assign also runs with nothing new
        if cooperative:  # only what moves is revoked, and handed over a generation later
            assert given == [("one", "revoke", moved), ("two", "assign", moved)]
        else:  # eager: everything is given up, then everything shared out again
            assert ("one", "revoke", tps("jobs", 0, 1, 2, 3)) in given
            assert ("one", "assign", one.assignment()) in given
            assert ("two", "assign", moved) in given
        events.clear()

        await two.close()  # leaves the group: the other member takes everything back
        await Polling(one).until(lambda: len(one.assignment()) == 4)
        assert ("two", "revoke", moved) in events
        assert ("one", "assign", moved if cooperative else tps("jobs", 0, 1, 2, 3)) in events
    finally:
        await one.close()
        await two.close()


async def test_commits_survive_a_consumer_restart(broker: BrokerProcess) -> None:
    await setup_topic(broker.url, "ledger", 2, records=100)
    async with Consumer(broker.url, group_id="g", enable_auto_commit=False, **FAST) as first:
        first.subscribe(["ledger"])
        polling = Polling(first)
        await polling.until(lambda: polling.total() >= 60)
        await first.commit()  # everything poll returned
        committed = {tp: await first.position(tp) for tp in first.assignment()}
        assert sum(committed.values()) == polling.total()
        for tp, offset in committed.items():
            assert await first.committed(tp) == offset
        # Not committed (manual commit only): read again by the next member.
        polling.got[first].clear()
        await polling.until(lambda: polling.total() >= 100 - sum(committed.values()))

    async with Consumer(broker.url, group_id="g", **FAST) as second:
        second.subscribe(["ledger"])
        polling = Polling(second)
        await polling.until(lambda: polling.total() >= 100 - sum(committed.values()))
        for record in polling.got[second]:
            assert record.offset >= committed[TopicPartition("ledger", record.partition)]
        assert polling.total() == 100 - sum(committed.values())
    # Closing committed (auto commit): a third member has nothing left to read.
    async with Admin(broker.url) as admin:
        offsets = await admin.committed_offsets("g", ["ledger"])
    assert offsets == {tp: OffsetAndMetadata(50) for tp in tps("ledger", 0, 1)}


async def test_a_killed_member_s_partitions_move_once_its_session_times_out(
    broker: BrokerProcess,
) -> None:
    await setup_topic(broker.url, "work", 2, records=20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
    example = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--url", broker.url, "--group", "g", "--topic", "work",
         "--session-timeout-ms", "1500", "--heartbeat-interval-ms", "200",
         "--client-id", "example"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert example.stdout is not None
        lines = [json.loads(example.stdout.readline()) for _ in range(20)]
        assert sorted((line["partition"], line["offset"]) for line in lines) == sorted(
            (p, o) for p in range(2) for o in range(10)
        )
        assert {line["generation"] for line in lines} == {1}
        assert lines[0]["member"].startswith("example-")
        assert {line["value"] for line in lines} == {str(i) for i in range(20)}
        async with Consumer(broker.url, group_id="g", **FAST) as survivor:
            survivor.subscribe(["work"])
            polling = Polling(survivor)
            await polling.until(lambda: survivor.group_metadata().generation >= 0)  # type: ignore[union-attr]
            example.kill()  # kill -9: no commit, no leave
            example.wait(10)
            started = time.monotonic()
            await polling.until(lambda: len(survivor.assignment()) == 2, timeout=10)
            assert time.monotonic() - started < 1.5 + 3  # the session, and some slack
    finally:
        example.kill()
        example.wait(10)


async def test_admin_lists_describes_resets_and_deletes_groups(broker: BrokerProcess) -> None:
    await setup_topic(broker.url, "audit", 2, records=10)
    async with Admin(broker.url) as admin:
        with pytest.raises(errors.UnknownGroup):
            await admin.describe_group("nobody")
        assert await admin.committed_offsets("nobody") == {}

        # A consumer that assigns its own partitions commits without joining.
        async with Consumer(broker.url, group_id="manual", **FAST) as consumer:
            consumer.assign([("audit", 0), ("audit", 1)])
            polling = Polling(consumer)
            await polling.until(lambda: polling.total() >= 10)
            await consumer.commit({("audit", 0): 3})
        # Closing auto-committed the positions.
        assert await admin.committed_offsets("manual") == {
            tp: OffsetAndMetadata(5) for tp in tps("audit", 0, 1)
        }
        await admin.commit_offsets("manual", {("audit", 1): OffsetAndMetadata(2, "note")})
        described = await admin.describe_group("manual")
        assert (described.state, described.members) == ("Empty", ())
        assert [(o.partition, o.committed, o.log_end_offset, o.lag) for o in described.offsets] == [
            (0, 5, 5, 0),
            (1, 2, 5, 3),
        ]
        assert described.lag == 3
        assert [(g.group, g.state, g.members) for g in await admin.list_groups()] == [
            ("manual", "Empty", 0)
        ]

        plan = await admin.reset_offsets("manual", "earliest", dry_run=True)
        assert plan == {tp: 0 for tp in tps("audit", 0, 1)}
        assert (await admin.committed_offsets("manual"))[TopicPartition("audit", 0)].offset == 5
        assert await admin.reset_offsets("manual", "offsets", offsets={("audit", 0): 4}) == {
            TopicPartition("audit", 0): 4
        }
        assert await admin.reset_offsets("manual", "latest", topics=["audit"]) == {
            tp: 5 for tp in tps("audit", 0, 1)
        }
        future = int(time.time() * 1000) + 60_000
        assert await admin.reset_offsets("manual", "timestamp", timestamp=future) == {
            tp: 5 for tp in tps("audit", 0, 1)
        }

        # While a member is live, the group's offsets are its own.
        async with Consumer(broker.url, group_id="manual", **FAST) as member:
            member.subscribe(["audit"])
            await Polling(member).until(lambda: len(member.assignment()) == 2)
            assert (await admin.describe_group("manual")).state == "Stable"
            with pytest.raises(errors.GroupNotEmpty):
                await admin.reset_offsets("manual", "earliest")
            with pytest.raises(errors.GroupNotEmpty):
                await admin.delete_group("manual")
            with pytest.raises(errors.UnknownMember):  # a commit without membership
                await admin.commit_offsets("manual", {("audit", 0): 1})
        await admin.delete_group("manual")
        assert "manual" not in [g.group for g in await admin.list_groups()]
        assert await admin.committed_offsets("manual") == {}


def test_a_sync_consumer_in_a_group(broker: BrokerProcess) -> None:
    asyncio.run(setup_topic(broker.url, "plain", 3, records=30))
    assigned: list[set[TopicPartition]] = []
    with SyncConsumer(broker.url, group_id="scripts", **FAST) as consumer:

        def on_assign(partitions: set[TopicPartition]) -> None:
            assigned.append(partitions)
            if TopicPartition("plain", 0) in partitions:
                consumer.seek(("plain", 0), 8)  # callbacks may move positions

        consumer.subscribe("plain", on_assign=on_assign)
        seen: list[ConsumerRecord] = []
        deadline = time.monotonic() + 15
        while len(seen) < 22 and time.monotonic() < deadline:
            seen += consumer.poll(timeout_ms=200)
        assert sorted((r.partition, r.offset) for r in seen) == [(0, 8), (0, 9)] + [
            (p, o) for p in (1, 2) for o in range(10)
        ]
        assert assigned == [tps("plain", 0, 1, 2)]
        consumer.commit()
        assert consumer.committed(("plain", 2)) == 10
        metadata = consumer.group_metadata()
        assert metadata is not None and metadata.group_id == "scripts"
        assert metadata.generation == 1


async def test_a_member_carries_on_through_a_broker_restart_without_a_rebalance(
    broker: BrokerProcess,
) -> None:
    await setup_topic(broker.url, "durable", 2, records=40)
    options = {**FAST, "retry_backoff_ms": 50, "retry_backoff_max_ms": 200}
    async with Consumer(broker.url, group_id="g", enable_auto_commit=False, **options) as member:
        member.subscribe(["durable"])
        polling = Polling(member)
        await polling.until(lambda: polling.total() >= 40)
        await member.commit()
        before = member.group_metadata()
        assert before is not None
        broker.kill()  # the group was Stable: its membership was stored, as its commits
        broker.start()
        await produce(broker.url, "durable", 20, 2, start=40)
        await polling.until(lambda: polling.total() >= 60, timeout=20)
        # No rebalance: the member kept its id, generation and partitions.
        assert member.group_metadata() == before
        assert sorted(int(r.value or b"") for r in polling.got[member]) == list(range(60))


async def test_a_member_that_stops_polling_leaves_and_the_others_take_over(
    broker: BrokerProcess,
) -> None:
    # Heartbeats run in the background; without a poll for a rebalance timeout the member
    # must still give its partitions up (Kafka's max.poll.interval).
    await setup_topic(broker.url, "stall", 2, records=10)
    settings = {**FAST, "rebalance_timeout_ms": 2_000}
    async with (
        Consumer(broker.url, group_id="s", **settings) as busy,
        Consumer(broker.url, group_id="s", **settings) as healthy,
    ):
        busy.subscribe(["stall"])
        healthy.subscribe(["stall"])
        polling = Polling(busy, healthy)
        await polling.until(polling.stable(tps("stall", 0, 1)))
        assert busy.assignment() and healthy.assignment()
        alone = Polling(healthy)  # busy is stuck in its own work from here on
        await alone.until(lambda: healthy.assignment() == tps("stall", 0, 1), timeout=15)
        await busy.poll(timeout_ms=100)  # back: what it held is lost, and it joins again
        assert busy.assignment() == set()
        await polling.until(lambda: len(busy.assignment()) == len(healthy.assignment()) == 1)


async def test_a_static_member_restarts_into_its_place_and_the_old_process_is_fenced(
    broker: BrokerProcess,
) -> None:
    await setup_topic(broker.url, "static", 2, records=20)
    options = {**FAST, "session_timeout_ms": 10_000, "enable_auto_commit": False}

    def member(instance: str) -> Consumer:
        return Consumer(broker.url, group_id="static", group_instance_id=instance, **options)

    pods = {pod: member(pod) for pod in ("pod-0", "pod-1")}
    for consumer in pods.values():
        consumer.subscribe(["static"])
    polling = Polling(*pods.values())
    await polling.until(lambda: polling.total() >= 20 and polling.stable(tps("static", 0, 1))())
    # The follower restarts (a leader's restart rebalances once: it must see its own plan).
    leader = call("GET", f"{broker.url}/v1/groups/static").json["leader"]
    ids = {pod: c.group_metadata() for pod, c in pods.items()}
    pod = next(p for p, m in ids.items() if m is not None and m.member_id != leader)
    first, other = pods[pod], next(c for p, c in pods.items() if p != pod)
    async with other:
        await first.commit()
        before = other.group_metadata()
        held = first.assignment()
        await first.close()  # a static member does not leave: its place waits for it
        async with member(pod) as restarted:
            restarted.subscribe(["static"])
            polling = Polling(restarted, other)
            await produce(broker.url, "static", 10, 2, start=20)
            await polling.until(lambda: polling.total() >= 10)
            assert restarted.assignment() == held  # the old process's partitions
            assert other.group_metadata() == before  # no rebalance: same generation
            assert sorted(int(r.value or b"") for r in polling.got[restarted]) == sorted(
                i for i in range(20, 30) if TopicPartition("static", i % 2) in held
            )
            # A zombie: a third process with the same instance id replaces this one.
            async with member(pod) as replacing:
                replacing.subscribe(["static"])
                polling = Polling(replacing, other)
                await polling.until(lambda: bool(replacing.assignment()))
                with pytest.raises(errors.FencedInstanceId):
                    for _ in range(50):  # its next heartbeat (200 ms) learns it
                        await restarted.poll(timeout_ms=100)
