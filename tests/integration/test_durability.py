"""Crash safety on real processes: kill -9 under load, torn tails, restarts, retention."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from millstream.records import BatchBuilder, decode_batch, iter_batches
from tests.support.broker import BrokerProcess
from tests.support.http import call

BATCH = "application/vnd.kafka.record-batch"


def read_all(broker: BrokerProcess, topic: str, partition: int) -> dict[int, bytes | None]:
    """Every record of a partition as offset -> value, through the raw fetch path."""
    out: dict[int, bytes | None] = {}
    base = f"{broker.url}/v1/topics/{topic}/partitions/{partition}"
    offset = call("GET", f"{base}/offsets?at=earliest").json["offset"]
    while True:
        reply = call(
            "GET",
            f"{broker.url}/v1/topics/{topic}/partitions/{partition}/records?offset={offset}",
            headers={"Accept": BATCH},
        )
        assert reply.status == 200, reply.body
        if not reply.body:
            return out
        for info in iter_batches(reply.body):
            for record in decode_batch(reply.body, info.position):
                out[record.offset] = record.value
        offset = int(reply.headers["Millstream-Next-Offset"])


def test_kill_9_during_a_produce_loop_loses_no_acknowledged_record(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        assert call("POST", f"{broker.url}/v1/topics", {"name": "c", "partitions": 2}).status == 201
        acked: dict[tuple[int, int], bytes] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def produce(worker: int) -> None:
            n = 0
            while not stop.is_set():
                partition = n % 2
                builder = BatchBuilder()
                values = [f"w{worker}-b{n}-r{i}".encode() for i in range(50)]
                for value in values:
                    builder.append(value)
                try:
                    reply = call(
                        "POST",
                        f"{broker.url}/v1/topics/c/partitions/{partition}/batches",
                        data=builder.build(),
                        headers={"Content-Type": BATCH},
                        timeout=5,
                    )
                except OSError:
                    return  # the broker is gone: whatever was not acknowledged may be lost
                if reply.status != 200:
                    return
                base = reply.json["base_offset"]
                with lock:
                    for i, value in enumerate(values):
                        acked[(partition, base + i)] = value
                n += 1

        workers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0 + random.random())
        broker.kill()
        stop.set()
        for w in workers:
            w.join(10)
        assert len(acked) > 1000, "the producers should have been acknowledged many times"

        broker.start()
        stored = {p: read_all(broker, "c", p) for p in range(2)}
        missing = [key for key, value in acked.items() if stored[key[0]].get(key[1]) != value]
        assert missing == []
        for p in range(2):  # offsets stay dense: nothing was half-written
            assert sorted(stored[p]) == list(range(len(stored[p])))
        # And the partition keeps going from where it was.
        reply = call(
            "POST",
            f"{broker.url}/v1/topics/c/records",
            {"records": [{"value": "after", "partition": 0}]},
        )
        assert reply.json["offsets"][0]["offset"] == len(stored[0])
    finally:
        broker.kill()


def test_torn_tail_is_truncated_on_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        call("POST", f"{broker.url}/v1/topics", {"name": "torn"})
        for i in range(10):
            call("POST", f"{broker.url}/v1/topics/torn/records", {"records": [{"value": f"v{i}"}]})
        broker.kill()

        (segment,) = (tmp_path / "data" / "topics" / "torn" / "0").glob("*.log")
        size = segment.stat().st_size
        builder = BatchBuilder()
        builder.append(b"never acknowledged " * 20)
        partial = builder.build(base_offset=10)
        with segment.open("ab") as f:
            f.write(partial[: len(partial) // 2])  # a write cut off by the crash

        broker.start()
        assert segment.stat().st_size == size
        assert "truncat" in broker.log.lower()
        stored = read_all(broker, "torn", 0)
        assert stored == {i: f"v{i}".encode() for i in range(10)}
        reply = call(
            "POST", f"{broker.url}/v1/topics/torn/records", {"records": [{"value": "next"}]}
        )
        assert reply.json["offsets"] == [{"partition": 0, "offset": 10}]
    finally:
        broker.kill()


def test_corrupt_batch_in_the_tail_is_never_served(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        call("POST", f"{broker.url}/v1/topics", {"name": "rot"})
        for i in range(5):
            call("POST", f"{broker.url}/v1/topics/rot/records", {"records": [{"value": f"v{i}"}]})
        broker.kill()
        (segment,) = (tmp_path / "data" / "topics" / "rot" / "0").glob("*.log")
        data = bytearray(segment.read_bytes())
        last = list(iter_batches(bytes(data)))[-1]
        data[last.position + last.size - 2] ^= 0xFF  # rot inside the last batch's records
        segment.write_bytes(bytes(data))

        broker.start()
        stored = read_all(broker, "rot", 0)
        assert stored == {i: f"v{i}".encode() for i in range(4)}
    finally:
        broker.kill()


def test_retention_deletes_old_segments(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", extra_args=("--housekeeping-interval", "0.2")).start()
    try:
        config = {"segment.bytes": 4096, "retention.ms": 1500}
        call("POST", f"{broker.url}/v1/topics", {"name": "old", "config": config})
        old = int(time.time() * 1000) - 60_000
        for _ in range(40):  # old records, spread over several segments
            body = {"records": [{"value": "x" * 200, "timestamp": old}]}
            call("POST", f"{broker.url}/v1/topics/old/records", body)
        segments = lambda: sorted((tmp_path / "data" / "topics" / "old" / "0").glob("*.log"))  # noqa: E731
        assert len(segments()) > 2
        deadline = time.monotonic() + 10
        while len(segments()) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(segments()) == 1, "only the active segment is left"
        described = call("GET", f"{broker.url}/v1/topics/old").json["partitions"][0]
        assert described["earliest_offset"] > 0
        assert described["latest_offset"] == 40
        remaining = read_all(broker, "old", 0)
        assert min(remaining) == described["earliest_offset"]
        assert max(remaining) == 39
    finally:
        broker.kill()
