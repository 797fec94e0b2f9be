"""Three group members under a running producer: members leave, crash (kill -9) and are
replaced. Afterwards every acknowledged record was consumed, and no record was delivered to two
members of one generation. Members are real processes (examples/group_consumer.py)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.support.broker import BrokerProcess
from tests.support.group_members import (
    Member,
    assert_one_member_per_generation,
    wait_until_all_consumed,
)
from tests.support.http import call

PARTITIONS = 6


class Producer(threading.Thread):
    """Produces keyed records over HTTP until stopped; remembers what was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: dict[tuple[int, int], str] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            values = [f"v{n + i}" for i in range(20)]
            body = {"records": [{"key": v, "value": v} for v in values]}
            reply = call("POST", f"{self.url}/v1/topics/chaos/records", body)
            if reply.status == 200:
                for value, where in zip(values, reply.json["offsets"], strict=True):
                    self.acked[(where["partition"], where["offset"])] = value
            n += 20
            time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("assignor", ["cooperative-sticky", "range"])
def test_members_come_and_go_and_every_record_is_consumed_once_per_generation(
    tmp_path: Path, assignor: str
) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    body = {"name": "chaos", "partitions": PARTITIONS}
    assert call("POST", f"{broker.url}/v1/topics", body).status == 201
    members: list[Member] = []
    producer = Producer(broker.url)

    def add(name: str) -> Member:
        members.append(Member(broker.url, assignor, tmp_path, name))
        return members[-1]

    try:
        a, b, c = add("a"), add("b"), add("c")
        producer.start()
        time.sleep(2.0)
        a.stop(signal.SIGTERM)  # leaves: commits and says goodbye
        add("d")
        time.sleep(2.0)
        b.stop(signal.SIGKILL)  # crashes: its partitions move once its session times out
        add("e")
        time.sleep(2.0)
        c.stop(signal.SIGKILL)
        time.sleep(1.0)
        producer.halt.set()
        producer.join(timeout=30)
        assert len(producer.acked) > 1000
        seen = wait_until_all_consumed(members, producer.acked, deadline=time.monotonic() + 60)
        missing = set(producer.acked) - set(seen)
        assert not missing, f"{len(missing)} acknowledged records never consumed"
        for where, value in producer.acked.items():
            assert seen[where] == value
        assert_one_member_per_generation(members)
    finally:
        producer.halt.set()
        for member in members:
            if member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait()
        broker.kill()
