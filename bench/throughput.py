"""Throughput and latency of one broker, measured from one client process.

Starts a real broker (``millstream serve``) on a fresh data directory, pinned to one core when
the machine has two or more (the client gets the other), and measures with the Python client:

- durable produce on the fast path (raw RecordBatch v2): 1,000,000 records of 100 B and
  200,000 of 1 KiB; the same on the JSON path;
- consuming each back from offset 0 (raw batches, decoded into records);
- end-to-end latency (send to receipt by a following consumer) at 5,000 records/s.

Run: ``python bench/throughput.py`` (``--scale 0.1`` for a quick look). Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from millstream.client import Admin, Consumer, Producer
from tests.support.broker import BrokerProcess

PARTITIONS = 4
Row = tuple[str, int, int, float]


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


async def produce_fast(url: str, topic: str, count: int, size: int) -> float:
    value = b"x" * size
    async with Producer(url, linger_ms=5, batch_size=256 * 1024) as producer:
        started = time.perf_counter()
        chunk = 10_000
        for _ in range(count // chunk):
            await producer.send_many(topic, [value] * chunk)
        await producer.flush()
        return time.perf_counter() - started


async def produce_json(url: str, topic: str, count: int, size: int) -> float:
    per_request = 1000
    body = {"records": [{"value": "x" * size} for _ in range(per_request)]}
    payload = __import__("json").dumps(body).encode()
    requests = count // per_request
    in_flight = 8
    async with aiohttp.ClientSession() as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with session.post(
                    f"{url}/v1/topics/{topic}/records",
                    data=payload,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

        started = time.perf_counter()
        share = [requests // in_flight + (i < requests % in_flight) for i in range(in_flight)]
        await asyncio.gather(*(worker(n) for n in share))
        return time.perf_counter() - started


async def consume(url: str, topic: str, count: int) -> float:
    async with Consumer(url) as consumer:
        consumer.assign([(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        started = time.perf_counter()
        seen = 0
        while seen < count:
            seen += len(await consumer.poll(timeout_ms=5000))
        return time.perf_counter() - started


async def latency(url: str, topic: str, rate: int, seconds: float) -> list[float]:
    """End-to-end latencies in ms: each value carries its send time (this process's clock)."""
    samples: list[float] = []
    total = int(rate * seconds)
    async with (
        Producer(url, linger_ms=0) as producer,
        Consumer(url, stream=True) as consumer,
    ):
        consumer.assign([(topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_end()
        for p in range(PARTITIONS):
            await consumer.position((topic, p))

        async def follow() -> None:
            while len(samples) < total:
                for record in await consumer.poll(timeout_ms=1000):
                    now = time.perf_counter_ns()
                    samples.append((now - int(record.value or b"0")) / 1e6)

        reader = asyncio.create_task(follow())
        interval = 1 / rate
        next_at = time.perf_counter()
        for _ in range(total):
            await producer.send(topic, str(time.perf_counter_ns()).encode())
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
        await asyncio.wait_for(reader, 30)
    return samples


async def run(url: str, scale: float) -> tuple[list[Row], list[float]]:
    rows: list[Row] = []
    n100, n1k = int(1_000_000 * scale), int(200_000 * scale)
    async with Admin(url) as admin:
        for name in ("fast100", "fast1k", "json100", "json1k", "latency"):
            await admin.create_topic(name, partitions=PARTITIONS)

    plan: list[tuple[str, Callable[[], Any], int, int]] = [
        ("produce fast path 100 B", lambda: produce_fast(url, "fast100", n100, 100), n100, 100),
        ("produce fast path 1 KiB", lambda: produce_fast(url, "fast1k", n1k, 1024), n1k, 1024),
        ("produce JSON 100 B", lambda: produce_json(url, "json100", n100, 100), n100, 100),
        ("produce JSON 1 KiB", lambda: produce_json(url, "json1k", n1k, 1024), n1k, 1024),
        ("consume 100 B", lambda: consume(url, "fast100", n100), n100, 100),
        ("consume 1 KiB", lambda: consume(url, "fast1k", n1k), n1k, 1024),
    ]
    for name, step, count, size in plan:
        seconds = await step()
        rows.append((name, count, size, seconds))
        print(f"  {name}: {count / seconds:,.0f} records/s", file=sys.stderr)
    samples = await latency(url, "latency", rate=5000, seconds=max(2.0, 10 * scale))
    return rows, samples


def table(rows: list[Row], samples: list[float]) -> str:
    lines = [
        "| scenario | records | record size | seconds | records/s | MB/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, count, size, seconds in rows:
        lines.append(
            f"| {name} | {count:,} | {size} B | {seconds:.2f} | {count / seconds:,.0f} | "
            f"{count * size / seconds / 1e6:.1f} |"
        )
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    lines.append(
        f"\nend-to-end latency at 5,000 records/s ({len(samples):,} records): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {samples[-1]:.2f} ms"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the record counts")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="millstream-bench-") as tmp:
        broker = BrokerProcess(args.data_dir or Path(tmp) / "data").start()
        try:
            assert broker.proc is not None
            pin(broker.proc.pid, 0)
            pin(0, 1)
            rows, samples = asyncio.run(run(broker.url, args.scale))
        finally:
            broker.stop()
    print(table(rows, samples))


if __name__ == "__main__":
    main()
