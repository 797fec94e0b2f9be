"""Moving partitions between real broker processes, as the operator will drive it: under a
running producer and consumer group (every acknowledged record consumed at its offset), with
the receiver killed -9 mid-copy, cancelled, throttled, switched while the source is down (the
receiver fences it when it is back), and a failed move reported and started again, by the
broker and by the operator's own step over a move."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from millstream.client import Consumer, Producer
from millstream.operator import rebalance, rebalancer
from millstream.operator.brokers import Brokers
from millstream.operator.rebalance import MoveProgress, PlannedMove
from millstream.records import BatchBuilder, iter_batches
from tests.support.cluster import TestCluster
from tests.support.http import call
from tests.support.moves import (
    BATCH,
    completed,
    held,
    in_sync,
    move_of,
    place,
    raw_log,
    start_move,
    wait_move,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    brokers = TestCluster(tmp_path_factory.mktemp("moves")).start()
    try:
        yield brokers
    finally:
        brokers.stop()


def fill(url: str, topic: str, partition: int, batches: int, value_bytes: int = 10_000) -> None:
    """About ``batches * value_bytes`` bytes: batches of 10 records, by raw produce."""
    for i in range(batches):
        builder = BatchBuilder()
        for j in range(10):
            builder.append(bytes([i % 256]) * (value_bytes // 10), b"k%d-%d" % (i, j))
        reply = call(
            "POST",
            f"{url}/v1/topics/{topic}/partitions/{partition}/batches",
            data=builder.build(),
            headers={"Content-Type": BATCH},
        )
        assert reply.status == 200, reply.body


def offsets_of(data: bytes) -> list[int]:
    return [o for info in iter_batches(data) for o in range(info.base_offset, info.last_offset + 1)]


async def test_a_move_under_a_producer_and_a_consumer_group(cluster: TestCluster) -> None:
    topic, source, receiver = "orders", cluster.urls[0], cluster.urls[1]
    place(cluster, topic, {"0": 0, "1": 1, "2": 2}, epoch=1)
    acked: dict[tuple[int, int], bytes] = {}
    seen: dict[tuple[int, int], bytes] = {}
    stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()

    async def produce() -> None:
        async with Producer(cluster.urls[2], linger_ms=2) as producer:
            n = 0
            while not stop_producing.is_set():
                values = [b"v%d" % (n + i) for i in range(20)]
                futures = [await producer.send(topic, v, key=v) for v in values]
                for value, future in zip(values, futures, strict=True):
                    metadata = await future  # raises if a record is not acknowledged
                    acked[metadata.partition, metadata.offset] = value
                n += 20

    group = {"group_id": "movers", "session_timeout_ms": 6_000, "heartbeat_interval_ms": 300}
    consumers = [
        Consumer(url, auto_offset_reset="earliest", fetch_max_wait_ms=100, **group)
        for url in cluster.urls[:2]
    ]

    async def consume(consumer: Consumer) -> None:
        consumer.subscribe([topic])
        while not stop_consuming.is_set():
            for record in await consumer.poll(timeout_ms=200):
                key = (record.partition, record.offset)
                assert seen.setdefault(key, record.value or b"") == record.value, key

    tasks = [asyncio.ensure_future(produce())]
    tasks += [asyncio.ensure_future(consume(c)) for c in consumers]
    try:
        while sum(1 for p, _ in acked if p == 0) < 300:
            await asyncio.sleep(0.05)
        assert start_move(cluster, receiver, topic, 0).status == 201
        await asyncio.to_thread(wait_move, cluster, receiver, topic, 0, in_sync)
        before = max(o for p, o in acked if p == 0)
        # The switch: the operator pushes the new placement at a higher epoch, here to the
        # source first (it stops taking writes at once), then the receiver, then the third.
        place(cluster, topic, {"0": 1, "1": 1, "2": 2}, epoch=2)
        status = await asyncio.to_thread(wait_move, cluster, receiver, topic, 0, completed)
        await asyncio.sleep(1.0)  # keep producing to the new broker a while
        stop_producing.set()
        await tasks[0]
        deadline = time.monotonic() + 30
        while not acked.keys() <= seen.keys():
            assert time.monotonic() < deadline, sorted(acked.keys() - seen.keys())[:10]
            await asyncio.sleep(0.1)
    finally:
        stop_producing.set()
        stop_consuming.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in consumers))

    # Every acknowledged record was consumed, at the offset it was acknowledged with.
    assert all(seen[key] == value for key, value in acked.items())
    after = max(o for p, o in acked if p == 0)
    assert after > before and status["final_offset"] <= after + 1
    # Partition 0 is one log on the receiver, its offsets unbroken from 0.
    moved = offsets_of(raw_log(receiver, topic, 0))
    assert moved == list(range(after + 1))
    # The source answers not_leader, naming the receiver, and keeps nothing of it.
    record = {"records": [{"value": "x", "partition": 0}]}
    refused = call("POST", f"{source}/v1/topics/{topic}/records", record)
    assert refused.status == 421 and refused.json["error"]["broker"]["id"] == 1
    assert (topic, 0) not in held(cluster, source)
    assert held(cluster, receiver)[topic, 0] == "serving"


def test_the_receiver_killed_mid_copy_resumes(cluster: TestCluster) -> None:
    topic, source = "killed", cluster.urls[0]
    receiver = cluster.brokers[2]
    place(cluster, topic, {"0": 0}, epoch=1)
    fill(source, topic, 0, batches=200)  # about 2 MB
    original = raw_log(source, topic, 0)
    reply = start_move(cluster, receiver.url, topic, 0, throttle_bytes_per_s=400_000)
    assert reply.status == 201 and reply.json["throttle_bytes_per_s"] == 400_000
    wait_move(cluster, receiver.url, topic, 0, lambda s: s["bytes_copied"] > 300_000)
    receiver.kill()  # kill -9 in the middle of the copy
    receiver.start()
    status = move_of(cluster, receiver.url, topic, 0)
    assert status["state"] == "copying" and 0 < status["log_end_offset"] < 2000, status
    assert status["bytes_copied"] == 0 or status["bytes_copied"] < len(original)
    recovered = status["log_end_offset"]
    path, unthrottled = f"/v1/admin/moves/{topic}/0", {"throttle_bytes_per_s": None}
    assert cluster.admin("PATCH", receiver.url, path, unthrottled).status == 200
    wait_move(cluster, receiver.url, topic, 0, in_sync)
    status = move_of(cluster, receiver.url, topic, 0)
    assert status["restarts"] == 0 and status["bytes_copied"] < len(original)  # resumed
    assert status["log_end_offset"] == 2000 and recovered <= 2000
    place(cluster, topic, {"0": 2}, epoch=2, urls=[receiver.url, *cluster.urls[:2]])
    wait_move(cluster, receiver.url, topic, 0, completed)
    assert raw_log(receiver.url, topic, 0) == original  # byte for byte, offsets included


def test_a_cancelled_move_deletes_its_copy_and_the_source_serves_on(
    cluster: TestCluster,
) -> None:
    topic, source, receiver = "cancelled", cluster.urls[0], cluster.urls[1]
    place(cluster, topic, {"0": 0}, epoch=1)
    fill(source, topic, 0, batches=50)
    assert start_move(cluster, receiver, topic, 0, throttle_bytes_per_s=50_000).status == 201
    wait_move(cluster, receiver, topic, 0, lambda s: s["log_end_offset"] > 0)
    assert held(cluster, receiver)[topic, 0] == "receiving"
    assert cluster.admin("DELETE", receiver, f"/v1/admin/moves/{topic}/0").status == 204
    gone = cluster.admin("GET", receiver, f"/v1/admin/moves/{topic}/0")
    assert (gone.status, gone.error_code) == (404, "unknown_move")
    assert cluster.admin("DELETE", receiver, f"/v1/admin/moves/{topic}/0").status == 404
    assert (topic, 0) not in held(cluster, receiver)
    receiver_dir = cluster.brokers[1].data_dir / "topics" / topic / "0"
    deadline = time.monotonic() + 5
    while receiver_dir.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fill(source, topic, 0, batches=1)  # the source never stopped serving
    assert offsets_of(raw_log(source, topic, 0))[-1] == 509


def test_the_copy_throttle_is_respected(cluster: TestCluster) -> None:
    topic, source, receiver = "throttled", cluster.urls[1], cluster.urls[2]
    place(cluster, topic, {"0": 1}, epoch=1)
    fill(source, topic, 0, batches=150)  # about 1.5 MB
    rate = 500_000
    assert start_move(cluster, receiver, topic, 0, throttle_bytes_per_s=rate).status == 201
    first = wait_move(cluster, receiver, topic, 0, lambda s: s["bytes_copied"] > 0)
    started = time.monotonic()
    last = wait_move(cluster, receiver, topic, 0, in_sync)
    elapsed = time.monotonic() - started
    measured = (last["bytes_copied"] - first["bytes_copied"]) / elapsed
    assert rate / 2 <= measured <= rate * 2, measured
    assert cluster.admin("DELETE", receiver, f"/v1/admin/moves/{topic}/0").status == 204


async def test_a_switch_while_the_source_is_down_waits_and_then_fences_it(
    cluster: TestCluster,
) -> None:
    """The partition is unavailable while the source is down, then the receiver fences it
    (the operator never pushed to it) and serves; clients retry meanwhile and lose nothing."""
    topic, receiver = "fenced", cluster.urls[2]
    source = cluster.brokers[0]
    place(cluster, topic, {"0": 0}, epoch=1)
    fill(source.url, topic, 0, batches=5)
    assert start_move(cluster, receiver, topic, 0).status == 201
    await asyncio.to_thread(wait_move, cluster, receiver, topic, 0, in_sync)
    acked: dict[int, bytes] = {}
    seen: dict[str, dict[int, bytes]] = {"polling": {}, "streaming": {}}
    stop = asyncio.Event()

    async def produce() -> None:
        async with Producer(cluster.urls[1], linger_ms=1, retries=30) as producer:
            n = 0
            while not stop.is_set():
                metadata = await producer.send_and_wait(topic, b"r%d" % n, partition=0)
                acked[metadata.offset] = b"r%d" % n
                n += 1

    async def consume(consumer: Consumer, into: dict[int, bytes]) -> None:
        async with consumer:
            consumer.assign([(topic, 0)])
            while True:
                for record in await consumer.poll(timeout_ms=100):
                    into[record.offset] = record.value or b""

    consumers = {
        "polling": Consumer(cluster.urls[1], auto_offset_reset="earliest", fetch_max_wait_ms=100),
        "streaming": Consumer(cluster.urls[1], auto_offset_reset="earliest", stream=True),
    }
    tasks = [asyncio.ensure_future(produce())]
    tasks += [asyncio.ensure_future(consume(c, seen[name])) for name, c in consumers.items()]
    try:
        while len(acked) < 20:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(source.stop)
        try:
            await asyncio.to_thread(place, cluster, topic, {"0": 2}, 2, urls=cluster.urls[1:])
            await asyncio.to_thread(check_moving_and_refusals, cluster, receiver, topic)
            await asyncio.sleep(1.0)  # clients retry on partition_moving meanwhile
        finally:
            # The operator never pushed to it: its metadata still says it serves.
            await asyncio.to_thread(source.start)
        await asyncio.to_thread(wait_move, cluster, receiver, topic, 0, completed)
        count = len(acked)
        while len(acked) < count + 20:  # the producer carries on on the receiver
            await asyncio.sleep(0.02)
        stop.set()
        await tasks[0]
        deadline = time.monotonic() + 30
        while not all(acked.keys() <= got.keys() for got in seen.values()):
            assert time.monotonic() < deadline, {k: len(v) for k, v in seen.items()}
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for got in seen.values():
        assert all(got[offset] == value for offset, value in acked.items())
    # Fenced by the receiver: the source refuses writes, naming the receiver.
    refused = call("POST", f"{source.url}/v1/topics/{topic}/records", {"records": [{"value": "x"}]})
    assert refused.status == 421 and refused.json["error"]["broker"]["id"] == 2
    offsets = offsets_of(raw_log(receiver, topic, 0))
    assert offsets == list(range(len(offsets))) and acked.keys() <= set(offsets)


def check_moving_and_refusals(cluster: TestCluster, receiver: str, topic: str) -> None:
    """While switching without its source: partition_moving for clients; no cancel; stale
    pushes refused; the move says why it waits."""
    base = f"{receiver}/v1/topics/{topic}/partitions/0"
    one = BatchBuilder()
    one.append(b"x")
    for reply in (
        call("POST", f"{base}/batches", data=one.build(), headers={"Content-Type": BATCH}),
        call("GET", f"{base}/records?offset=0"),
        call("GET", f"{base}/offsets?at=latest"),
    ):
        assert (reply.status, reply.error_code) == (503, "partition_moving"), reply.body
    refused = cluster.admin("DELETE", receiver, f"/v1/admin/moves/{topic}/0")
    assert (refused.status, refused.error_code) == (409, "move_conflict")
    old = {"partitions": 1, "placement": {"0": 0}, "epoch": 1}
    stale = cluster.admin("PUT", receiver, f"/v1/admin/topics/{topic}", old)
    assert (stale.status, stale.error_code) == (409, "stale_epoch")
    status = wait_move(cluster, receiver, topic, 0, lambda s: s["retries"] > 0)
    assert status["state"] == "switching" and status["error"]


def test_a_failed_move_is_reported_and_can_start_again(cluster: TestCluster) -> None:
    topic, receiver = "unknown-at-source", cluster.urls[1]
    place(cluster, topic, {"0": 0}, epoch=1, urls=cluster.urls[1:])  # the source lacks it
    assert start_move(cluster, receiver, topic, 0).status == 201
    failed = wait_move(cluster, receiver, topic, 0, lambda s: s["state"] == "failed")
    assert "unknown_topic" in failed["error"] or topic in failed["error"]
    listed = cluster.admin("GET", receiver, "/v1/admin/moves").json["moves"]
    assert [m["state"] for m in listed if m["topic"] == topic] == ["failed"]
    place(cluster, topic, {"0": 0}, epoch=1, urls=cluster.urls[:1])
    assert start_move(cluster, receiver, topic, 0).status == 201  # started again
    wait_move(cluster, receiver, topic, 0, in_sync)
    conflict = start_move(cluster, receiver, topic, 0, source=2)
    assert (conflict.status, conflict.error_code) == (409, "move_conflict")
    assert start_move(cluster, receiver, topic, 0).status == 200  # the same move
    assert cluster.admin("DELETE", receiver, f"/v1/admin/moves/{topic}/0").status == 204


async def test_the_operator_reports_a_failed_move_and_starts_it_again(
    cluster: TestCluster,
) -> None:
    """The operator's pass over one move (follow it on its receiver, start it if it is not
    running or failed) against the real brokers."""
    topic = "operator-retry"
    place(cluster, topic, {"0": 0}, epoch=1, urls=cluster.urls[1:])  # the source lacks it
    move, placements = PlannedMove(topic, 0, source=0, target=1), {topic: {0: 0}}
    logger = logging.getLogger("test-operator")
    async with Brokers(cluster.urls, cluster.token, timeout_s=5) as brokers:
        pending = MoveProgress(move, "pending")
        started = await rebalancer._start(brokers, pending, placements, None, logger)
        assert started.state == "copying" and started.retries == 0
        deadline = time.monotonic() + 30
        failed = started
        while failed.state != "failed":
            assert time.monotonic() < deadline, failed
            await asyncio.sleep(0.2)
            failed = await rebalancer._follow(brokers, move, failed.to_status(), placements)
        # Reported: the receiver's error, and the phase the Cluster's status then shows.
        assert failed.error is not None and topic in failed.error
        assert rebalance.phase([failed], brokers=3, running=3, drained=True) == "Failed"
        assert failed.to_status()["error"] == failed.error

        place(cluster, topic, {"0": 0}, epoch=1, urls=cluster.urls[:1])  # the cause is gone
        retried = await rebalancer._start(brokers, failed, placements, None, logger)
        assert retried.retries == 1 and retried.state != "failed"
    wait_move(cluster, cluster.urls[1], topic, 0, in_sync)
    assert cluster.admin("DELETE", cluster.urls[1], f"/v1/admin/moves/{topic}/0").status == 204


def test_a_topic_acknowledged_before_fsync_moves_whole(cluster: TestCluster) -> None:
    # With flush.ms > 0 the source copies only what it fsynced (a crash could take back the
    # rest and reuse its offsets), flushing on demand, so the copy still ends up whole.
    topic, source, receiver = "lazy", cluster.urls[0], cluster.urls[1]
    config = {"flush.ms": 60_000}  # no fsync of its own for a minute
    place(cluster, topic, {"0": 0}, epoch=1, config=config)
    fill(source, topic, 0, batches=20)
    original = raw_log(source, topic, 0)
    assert start_move(cluster, receiver, topic, 0).status == 201
    wait_move(cluster, receiver, topic, 0, in_sync)
    place(cluster, topic, {"0": 1}, epoch=2, config=config)
    wait_move(cluster, receiver, topic, 0, completed)
    assert raw_log(receiver, topic, 0) == original
