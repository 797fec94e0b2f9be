"""The Python client against real broker processes: admin, producer, consumer, sync wrappers."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from millstream import errors
from millstream.client import (
    Admin,
    Consumer,
    ConsumerRecord,
    Producer,
    ProducerRecord,
    RecordMetadata,
    SyncAdmin,
    SyncConsumer,
    SyncProducer,
    TopicPartition,
)
from millstream.partitioner import partition_for_key
from tests.support.broker import BrokerProcess


async def read_all(
    url: str, topic: str, partitions: int, *, expect: int, timeout: float = 20.0
) -> list[ConsumerRecord]:
    """Every record of the topic from the beginning, once ``expect`` of them have arrived."""
    async with Consumer(url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while len(records) < expect and time.monotonic() < deadline:
            records += await consumer.poll(timeout_ms=500)
        return records


def _raw(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


# --- admin ------------------------------------------------------------------------------------


async def test_topic_lifecycle(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        created = await admin.create_topic("orders", 3, {"retention.ms": 3_600_000})
        assert created.name == "orders"
        assert created.partition_count == 3
        assert created.config["retention.ms"] == 3_600_000
        with pytest.raises(errors.TopicExists):
            await admin.create_topic("orders")
        assert [(t.name, t.partitions) for t in await admin.list_topics()] == [("orders", 3)]

        altered = await admin.alter_topic("orders", partitions=5, config={"flush.ms": 100})
        assert altered.partition_count == 5
        assert altered.config["flush.ms"] == 100
        with pytest.raises(errors.InvalidConfig):
            await admin.alter_topic("orders", config={"no.such.setting": 1})

        described = await admin.describe_topic("orders")
        assert [p.partition for p in described.partitions] == [0, 1, 2, 3, 4]
        assert all(p.earliest_offset == p.latest_offset == 0 for p in described.partitions)

        await admin.delete_topic("orders")
        assert await admin.list_topics() == []
        with pytest.raises(errors.UnknownTopic):
            await admin.describe_topic("orders")


# --- producer and consumer ---------------------------------------------------------------------


async def test_round_trip_keeps_keys_headers_binary_and_order(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("events", 3)
    sent: list[tuple[str | bytes | None, str | bytes | None, list[tuple[str, bytes | str | None]]]]
    sent = [
        ("alice", "first", [("trace", b"t1")]),
        (b"\xff\x00bin", b"\x00\x01\x02\xff", [("bin", b"\xfe"), ("none", None)]),
        ("alice", "second", []),
        (None, "no key", []),
        ("bob", None, []),  # a tombstone
        ("alice", "\u00e9t\u00e9", [("\u00fc", "str header")]),
    ]
    async with Producer(broker.url, linger_ms=20) as producer:
        futures = [
            await producer.send("events", value, key=key, headers=headers, timestamp=1_000 + i)
            for i, (key, value, headers) in enumerate(sent)
        ]
        results = [await f for f in futures]
    for (key, _, _), meta in zip(sent, results, strict=True):
        assert meta.topic == "events"
        if key is not None:
            assert meta.partition == partition_for_key(_raw(key), 3)

    records = await read_all(broker.url, "events", 3, expect=len(sent))
    assert len(records) == len(sent)
    by_place = {(r.partition, r.offset): r for r in records}
    for i, ((key, value, headers), meta) in enumerate(zip(sent, results, strict=True)):
        record = by_place[(meta.partition, meta.offset)]
        assert record.key == (None if key is None else _raw(key))
        assert record.value == (None if value is None else _raw(value))
        assert record.headers == tuple((k, None if v is None else _raw(v)) for k, v in headers)
        assert record.timestamp == 1_000 + i
    alice = [r.value for r in records if r.key == b"alice"]
    assert alice == [b"first", b"second", "\u00e9t\u00e9".encode()]


async def test_send_many_spreads_keyless_records_and_keeps_partition_order(
    broker: BrokerProcess,
) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("bulk", 4)
    n = 30_000
    async with Producer(broker.url, batch_size=16 * 1024) as producer:
        values = (b"value-%06d" % i for i in range(n))
        result = await producer.send_many("bulk", values)
        keyed = await producer.send_many(
            "bulk", [ProducerRecord(b"k", b"key-%d" % i) for i in range(100)]
        )
        await producer.flush()
        metadata = await result
        assert len(metadata) == n
        assert {m.partition for m in await keyed} == {partition_for_key(b"key-0", 4)} | {
            partition_for_key(b"key-%d" % i, 4) for i in range(100)
        }

    assert len({m.partition for m in metadata}) == 4  # the sticky partitioner moved on
    per_partition: dict[int, list[int]] = defaultdict(list)
    for m in metadata:
        per_partition[m.partition].append(m.offset)
    for offsets in per_partition.values():
        assert offsets == sorted(offsets)

    records = await read_all(broker.url, "bulk", 4, expect=n + 100)
    assert len(records) == n + 100
    value_at = {(r.partition, r.offset): r.value for r in records}
    assert [value_at[(m.partition, m.offset)] for m in metadata] == [
        b"value-%06d" % i for i in range(n)
    ]


async def test_acks_1_and_0(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("fast", 1)
    async with Producer(broker.url, acks="1") as producer:
        assert (await producer.send_and_wait("fast", b"one")).offset == 0
    async with Producer(broker.url, acks="0") as producer:
        future = await producer.send("fast", b"two")
        assert future.done()
        assert (await future).offset == -1
        await producer.flush()  # the request is finished; it raises nothing
    records = await read_all(broker.url, "fast", 1, expect=2)
    assert [r.value for r in records] == [b"one", b"two"]


async def test_batches_respect_the_topic_max_message_bytes(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("small", 1, {"max.message.bytes": 2048})
    async with Producer(broker.url) as producer:
        with pytest.raises(errors.RecordTooLarge):
            await producer.send("small", b"x" * 4000)
        await producer.send_many("small", [b"y" * 100] * 500)
    records = await read_all(broker.url, "small", 1, expect=500)
    assert len(records) == 500


async def test_unknown_topics_and_partitions_are_errors(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("known", 2)
    async with Producer(broker.url) as producer:
        with pytest.raises(errors.UnknownTopic):
            await producer.send("unknown", b"v")
        with pytest.raises(errors.UnknownPartition):
            await producer.send("known", b"v", partition=2)
    async with Consumer(broker.url) as consumer:
        consumer.assign([("unknown", 0)])
        with pytest.raises(errors.UnknownTopic):
            await consumer.poll(timeout_ms=2_000)


async def test_seeks_positions_and_offsets(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("seek", 1)
    async with Producer(broker.url) as producer:
        for i in range(10):
            await producer.send("seek", b"%d" % i, timestamp=10_000 + 1_000 * i)
    tp = TopicPartition("seek", 0)
    async with Consumer(broker.url) as consumer:
        consumer.assign([tp])
        assert await consumer.position(tp) == 10  # auto_offset_reset="latest"
        assert await consumer.end_offsets([tp]) == {tp: 10}
        assert await consumer.beginning_offsets([tp]) == {tp: 0}

        consumer.seek(tp, 7)
        assert [r.offset for r in await consumer.poll(timeout_ms=5_000)] == [7, 8, 9]
        assert await consumer.position(tp) == 10
        assert consumer.highwater(tp) == 10

        consumer.seek_to_timestamp(14_500)
        assert (await consumer.poll(timeout_ms=5_000))[0].offset == 5

        consumer.seek_to_beginning()
        got = await consumer.poll(timeout_ms=5_000, max_records=4)
        assert [r.offset for r in got] == [0, 1, 2, 3]
        assert await consumer.position(tp) == 4

        consumer.seek_to_end()
        assert await consumer.poll(timeout_ms=200) == []
        assert await consumer.position(tp) == 10


async def test_offset_out_of_range(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("range", 1)
    async with Producer(broker.url) as producer:
        await producer.send_many("range", [b"a", b"b"])
    async with Consumer(broker.url, auto_offset_reset="none") as consumer:
        consumer.assign([("range", 0)])
        consumer.seek(("range", 0), 50)
        with pytest.raises(errors.OffsetOutOfRange):
            await consumer.poll(timeout_ms=5_000)
    async with Consumer(broker.url, auto_offset_reset="earliest") as consumer:
        consumer.assign([("range", 0)])
        consumer.seek(("range", 0), 50)  # out of range: reset to the earliest offset
        assert [r.value for r in await consumer.poll(timeout_ms=5_000)] == [b"a", b"b"]


async def test_iteration_follows_the_log(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("live", 2)

    async def first(n: int) -> list[bytes | None]:
        async with Consumer(broker.url, fetch_max_wait_ms=200) as consumer:
            consumer.assign([("live", 0), ("live", 1)])
            consumer.seek_to_end()
            for tp in consumer.assignment():
                await consumer.position(tp)  # pin the end before anything is produced
            ready.set()
            got: list[bytes | None] = []
            async for record in consumer:
                got.append(record.value)
                if len(got) == n:
                    return got
        raise AssertionError("unreachable")

    ready = asyncio.Event()
    reader = asyncio.create_task(first(5))
    await ready.wait()
    async with Producer(broker.url) as producer:
        for i in range(5):
            await producer.send_and_wait("live", b"%d" % i, key=b"%d" % i)
            await asyncio.sleep(0.05)
    got = await asyncio.wait_for(reader, 20)
    assert sorted(v or b"" for v in got) == [b"0", b"1", b"2", b"3", b"4"]


async def test_producer_retries_across_a_broker_restart(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("durable", 2)
    acknowledged: list[tuple[RecordMetadata, bytes]] = []
    loop = asyncio.get_running_loop()
    async with Producer(
        broker.url, linger_ms=2, retries=40, retry_backoff_ms=50, request_timeout_ms=5_000
    ) as producer:

        async def produce(start: int, count: int) -> None:
            for i in range(start, start + count):
                value = b"r%05d" % i
                future = await producer.send("durable", value)
                future_done = asyncio.ensure_future(_collect(future, value))
                pending.add(future_done)
                if i % 50 == 0:
                    await asyncio.sleep(0.01)

        async def _collect(future: object, value: bytes) -> None:
            meta = await future  # type: ignore[misc]
            acknowledged.append((meta, value))

        pending: set[asyncio.Future[None]] = set()
        await produce(0, 500)
        await asyncio.wait(pending)  # a first part is acknowledged...
        writer = asyncio.create_task(produce(500, 1_500))
        await asyncio.sleep(0.05)
        await loop.run_in_executor(None, broker.kill)  # ...then kill -9 mid-stream
        await asyncio.sleep(0.5)
        await loop.run_in_executor(None, broker.start)  # same data dir, same port
        await writer
        await producer.flush()
        await asyncio.wait(pending)

    assert len(acknowledged) == 2_000  # every send was eventually acknowledged
    records = await read_all(broker.url, "durable", 2, expect=2_000)
    stored = {(r.partition, r.offset): r.value for r in records}
    for meta, value in acknowledged:
        assert stored[(meta.partition, meta.offset)] == value
    # At least once: a retried request may have been applied twice, never zero times.
    assert {v for v in stored.values()} >= {b"r%05d" % i for i in range(2_000)}


# --- sync wrappers -----------------------------------------------------------------------------


def test_sync_clients_in_a_plain_script(broker: BrokerProcess) -> None:
    with SyncAdmin(broker.url) as admin:
        admin.create_topic("sync", 2)
        assert admin.offset_for("sync", 0, "latest") == 0

    with SyncProducer(broker.url, linger_ms=1) as producer:
        first = producer.send("sync", "hello", key="k")
        meta = first.get(timeout=10)
        assert (meta.topic, meta.partition, meta.offset) == ("sync", partition_for_key(b"k", 2), 0)
        futures = [producer.send("sync", b"v%d" % i, partition=1) for i in range(1_000)]
        many = producer.send_many("sync", (ProducerRecord(b"m%d" % i, b"k") for i in range(500)))
        producer.flush()
        assert [f.get().offset for f in futures] == sorted(f.get().offset for f in futures)
        assert len(many.get()) == 500
        with pytest.raises(errors.UnknownTopic):
            producer.send("nope", b"x").get(timeout=10)
        with pytest.raises(errors.UnknownTopic):
            producer.flush()  # reports the failed send too, once

    with SyncConsumer(broker.url, auto_offset_reset="earliest") as consumer:
        consumer.assign([("sync", 0), ("sync", 1)])
        seen: list[ConsumerRecord] = []
        for record in consumer:
            seen.append(record)
            if len(seen) == 1_501:
                break
        assert consumer.position(("sync", 1)) == 1_000 + (501 if meta.partition == 1 else 0)
        ones = [r.value for r in seen if r.partition == 1 and r.key is None]
        assert ones == [b"v%d" % i for i in range(1_000)]
        consumer.seek(("sync", 1), 999)
        assert consumer.poll(timeout_ms=5_000, max_records=1)[0].value == b"v999"


async def test_a_producer_sees_partitions_added_after_it_started(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin, Producer(broker.url) as producer:
        await admin.create_topic("growing", 1)
        assert await producer.partitions_for("growing") == 1
        await admin.alter_topic("growing", partitions=3)
        meta = await producer.send_and_wait("growing", b"to the new partition", partition=2)
        assert (meta.partition, meta.offset) == (2, 0)
        assert await producer.partitions_for("growing") == 3


async def test_streaming_consumer_follows_reassembles_and_seeks(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("live", partitions=2)
    async with (
        Producer(broker.url, linger_ms=0) as producer,
        Consumer(broker.url, auto_offset_reset="earliest", stream=True) as consumer,
    ):
        consumer.assign([("live", 0), ("live", 1)])
        assert await consumer.poll(timeout_ms=300) == []
        # Large batches arrive in many TCP chunks; small ones one by one.
        big = [ProducerRecord(b"x" * 1000, partition=0) for _ in range(2000)]
        await (await producer.send_many("live", big))
        for i in range(50):
            await producer.send("live", f"small-{i}".encode(), partition=1)
        await producer.flush()
        got: dict[int, list[ConsumerRecord]] = defaultdict(list)
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < 2050 and time.monotonic() < deadline:
            for record in await consumer.poll(timeout_ms=500):
                got[record.partition].append(record)
        assert [r.offset for r in got[0]] == list(range(2000))
        assert [r.value for r in got[1]] == [f"small-{i}".encode() for i in range(50)]

        consumer.seek(("live", 1), 45)
        again = []
        while len(again) < 5 and time.monotonic() < deadline:
            again += [r for r in await consumer.poll(timeout_ms=500) if r.partition == 1]
        assert [r.offset for r in again] == [45, 46, 47, 48, 49]


async def test_streaming_consumer_resumes_after_a_broker_restart(broker: BrokerProcess) -> None:
    async with Admin(broker.url) as admin:
        await admin.create_topic("resume")
    async with Consumer(
        broker.url, auto_offset_reset="earliest", stream=True, retry_backoff_ms=50
    ) as consumer:
        consumer.assign([("resume", 0)])
        async with Producer(broker.url) as producer:
            await (await producer.send_many("resume", [b"before"] * 10))
        seen: list[ConsumerRecord] = []
        while len(seen) < 10:
            seen += await consumer.poll(timeout_ms=500)
        broker.kill()
        broker.start()
        async with Producer(broker.url) as producer:
            await (await producer.send_many("resume", [b"after"] * 10))
        deadline = time.monotonic() + 20
        while len(seen) < 20 and time.monotonic() < deadline:
            seen += await consumer.poll(timeout_ms=500)
        assert [r.offset for r in seen] == list(range(20))
        assert [r.value for r in seen[10:]] == [b"after"] * 10
