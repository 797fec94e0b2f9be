"""Driving partition moves on a :class:`~tests.support.cluster.TestCluster` as the operator will:
placement pushes with epochs, and the receiver's move routes (docs/cluster.md, "Moving a
partition")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.support.cluster import TestCluster
from tests.support.http import Reply, call

BATCH = "application/vnd.kafka.record-batch"


def place(
    cluster: TestCluster,
    topic: str,
    placement: Mapping[str, int],
    epoch: int,
    *,
    urls: Iterable[str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Push the topic with this placement and topic epoch to ``urls`` (every broker), in order."""
    body = {
        "partitions": len(placement),
        "placement": dict(placement),
        "config": dict(config or {}),
        "topic_id": f"id-{topic}",
        "epoch": epoch,
    }
    for url in cluster.urls if urls is None else urls:
        reply = cluster.admin("PUT", url, f"/v1/admin/topics/{topic}", body)
        assert reply.status == 200, (url, reply.status, reply.body)


def start_move(cluster: TestCluster, url: str, topic: str, partition: int, **extra: Any) -> Reply:
    body = {"topic": topic, "partition": partition, **extra}
    return cluster.admin("POST", url, "/v1/admin/moves", body)


def move_of(cluster: TestCluster, url: str, topic: str, partition: int) -> dict[str, Any]:
    reply = cluster.admin("GET", url, f"/v1/admin/moves/{topic}/{partition}")
    assert reply.status == 200, reply.body
    return dict(reply.json)


def wait_move(
    cluster: TestCluster,
    url: str,
    topic: str,
    partition: int,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The move's status once ``done`` says so; fails with the last status on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = move_of(cluster, url, topic, partition)
        if done(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def in_sync(status: dict[str, Any]) -> bool:
    return status["state"] == "in_sync"


def completed(status: dict[str, Any]) -> bool:
    return status["state"] == "completed" and bool(status["source_released"])


def held(cluster: TestCluster, url: str) -> dict[tuple[str, int], str]:
    """(topic, partition) -> role of every partition with a log on that broker."""
    reply = cluster.admin("GET", url, "/v1/admin/partitions")
    assert reply.status == 200, reply.body
    return {(row["topic"], row["partition"]): row["role"] for row in reply.json["partitions"]}


def raw_log(url: str, topic: str, partition: int) -> bytes:
    """Every batch of a partition, as its broker stores them (public raw fetch)."""
    data, offset = b"", 0
    while True:
        reply = call(
            "GET",
            f"{url}/v1/topics/{topic}/partitions/{partition}/records"
            f"?offset={offset}&max_bytes=4194304",
            headers={"Accept": BATCH},
        )
        assert reply.status == 200, reply.body
        if not reply.body:
            return data
        data += reply.body
        offset = int(reply.headers["Millstream-Next-Offset"])
