"""A small cluster of real broker processes, with metadata pushed as the operator will push it.

Brokers are ``millstream serve --broker-id N --admin-token-file F`` processes on loopback
ports (:class:`~tests.support.broker.BrokerProcess`) standing in for the pods of a
StatefulSet; :meth:`TestCluster.push_cluster` and :meth:`TestCluster.push_topic` call their
admin routes with the token, to every broker, as the operator does. The group-offsets topic is
pushed at start, round robin, as the operator places it; :func:`group_on` finds a group id
coordinated by a given broker under that placement.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millstream.internal_topics import (
    GROUP_OFFSETS_CONFIG,
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
    group_offsets_partition,
)
from tests.support.broker import BrokerProcess
from tests.support.http import Reply, call


def start_brokers(root: Path, count: int, token_file: Path) -> list[BrokerProcess]:
    """Broker processes with ids 0 to count-1 under ``root``, sharing one admin token file."""
    brokers = []
    for broker_id in range(count):
        args = ("--broker-id", str(broker_id), "--admin-token-file", str(token_file))
        brokers.append(BrokerProcess(root / f"broker-{broker_id}", extra_args=args).start())
    return brokers


def round_robin(partitions: int, brokers: int) -> dict[str, int]:
    """Partition p on broker p % brokers, in the push's shape."""
    return {str(p): p % brokers for p in range(partitions)}


def group_on(broker_id: int, prefix: str, size: int = 3) -> str:
    """A group id coordinated by ``broker_id`` when the group-offsets topic is placed round
    robin over brokers 0..size-1."""
    return next(
        f"{prefix}-{i}"
        for i in range(1000)
        if group_offsets_partition(f"{prefix}-{i}", GROUP_OFFSETS_PARTITIONS) % size == broker_id
    )


@dataclass
class TestCluster:
    root: Path
    size: int = 3
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    brokers: list[BrokerProcess] = field(default_factory=list)
    epoch: int = 0

    __test__ = False  # not a test class, whatever its name says

    @property
    def token_file(self) -> Path:
        return self.root / "admin-token"

    def start(self) -> TestCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.brokers.extend(start_brokers(self.root, self.size, self.token_file))
        self.push_cluster()
        self.push_topic(GROUP_OFFSETS_TOPIC, GROUP_OFFSETS_PARTITIONS, config=GROUP_OFFSETS_CONFIG)
        return self

    def stop(self) -> None:
        for broker in self.brokers:
            broker.kill()

    @property
    def urls(self) -> list[str]:
        return [b.url for b in self.brokers]

    def admin(self, method: str, url: str, path: str, body: Any = None) -> Reply:
        headers = {"Authorization": f"Bearer {self.token}"}
        return call(method, url + path, body, headers=headers)

    def push_all(self, method: str, path: str, body: Any = None) -> list[Reply]:
        replies = [self.admin(method, url, path, body) for url in self.urls]
        for reply in replies:
            assert reply.status < 300, (reply.status, reply.body)
        return replies

    def push_cluster(self) -> None:
        self.epoch += 1
        brokers = [{"id": i, "url": url} for i, url in enumerate(self.urls)]
        self.push_all("PUT", "/v1/admin/cluster", {"epoch": self.epoch, "brokers": brokers})

    def push_topic(
        self,
        name: str,
        partitions: int,
        placement: Mapping[str, int] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        body = {
            "partitions": partitions,
            "placement": dict(placement or round_robin(partitions, self.size)),
            "config": dict(config or {}),
            "topic_id": f"id-{name}",
        }
        self.push_all("PUT", f"/v1/admin/topics/{name}", body)

    def owner(self, name: str, partition: int) -> BrokerProcess:
        """The broker a round-robin placement puts the partition on."""
        return self.brokers[partition % self.size]

    def others(self, broker: BrokerProcess) -> Sequence[BrokerProcess]:
        return [b for b in self.brokers if b is not broker]
