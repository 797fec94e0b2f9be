"""The issue's scale test: a Cluster goes 2 -> 4 -> 1 brokers with the real operator against
the real API server, under a running producer and a consumer group of two member processes
(``examples/group_consumer.py``), and a receiving broker is killed (``kill -9``) in the middle
of a copy.

Afterwards every acknowledged record was consumed and is readable at the offset it was
acknowledged with; no record went to two members of one generation; and the group's committed
offsets went with its partition of the group-offsets topic wherever the rebalance moved it,
so the members carried on from where they were instead of reading everything again. So did
its membership: the group's generation did not change while its coordinator moved.

Four broker processes run from the start (the operator reaches them through its URL
override); the Cluster asks for two, so brokers 2 and 3 are outside it until the scale-out."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millstream.client import SyncProducer
from millstream.internal_topics import (
    GROUP_OFFSETS_PARTITIONS,
    GROUP_OFFSETS_TOPIC,
    group_offsets_partition,
)
from tests.k8s.test_operator import (
    CLUSTER,
    INTERNAL,
    Stack,
    mark_ready,
    placement,
    stack_of,
)
from tests.k8s.test_rebalance import (
    TOPIC,
    Producing,
    admin_partitions,
    read_all,
    rebalance_status,
    statefulset_replicas,
)
from tests.support.group_members import (
    Member,
    assert_one_member_per_generation,
    wait_until_all_consumed,
)
from tests.support.operator import eventually

pytestmark = pytest.mark.k8s

RUNNING = 4
PARTITIONS = 6
# Slow enough that a copy of a partition is still running when its receiver is killed.
SLOW_COPY = 60_000


@pytest.fixture
def stack(
    millstream_crds: list[dict[str, Any]],
    rest: Any,
    chart_account: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    spec = {
        "brokers": 2,
        "storage": {"size": "1Gi"},
        "pvcPolicy": "Delete",
        "rebalance": {"throttleBytesPerSecond": SLOW_COPY},
    }
    with stack_of(rest, chart_account, tmp_path, "scale", RUNNING, spec) as built:
        yield built


def group_on(offsets: dict[int, int], broker: int) -> str:
    """A group id whose partition of the group-offsets topic is on ``broker``."""
    return next(
        f"scale-{i}"
        for i in range(10_000)
        if offsets[group_offsets_partition(f"scale-{i}", GROUP_OFFSETS_PARTITIONS)] == broker
    )


def describe(stack: Stack, group: str) -> dict[str, Any] | None:
    """The group as its coordinator (as broker 0 sees it) describes it; None before a member
    joined."""
    view = stack.brokers.cluster(0)
    offsets = next(t for t in view["topics"] if t["name"] == GROUP_OFFSETS_TOPIC)
    partition = group_offsets_partition(group, int(offsets["partitions"]))
    coordinator = int(offsets["placement"][str(partition)])
    url = next(b["url"] for b in view["brokers"] if int(b["id"]) == coordinator)
    try:
        with urllib.request.urlopen(f"{url}/v1/groups/{group}", timeout=5) as response:
            described: dict[str, Any] = json.loads(response.read())
            return described
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def committed(stack: Stack, group: str) -> dict[int, int]:
    """The group's committed offsets of TOPIC, asked of its coordinator."""
    described = describe(stack, group)
    if described is None:
        return {}
    return {
        int(row["partition"]): int(row["committed"])
        for row in described["offsets"]
        if row["topic"] == TOPIC and row["committed"] is not None
    }


def wait_rebalanced(stack: Stack, what: str, timeout: float = 150) -> dict[str, Any]:
    def idle() -> dict[str, Any] | None:
        status = rebalance_status(stack)
        total = status.get("movesTotal")
        done = total and status.get("movesCompleted") == total and status.get("phase") == "Idle"
        return status if done else None

    try:
        return eventually(idle, what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rebalance_status(stack)}\n{stack.operator.tail()}") from None


def kill_a_receiver_mid_copy(stack: Stack, broker: int) -> None:
    """kill -9 ``broker`` while it copies a partition of TOPIC, then start it again."""

    def copying() -> bool:
        roles = admin_partitions(stack, broker)
        return any(p["topic"] == TOPIC and p["role"] == "receiving" for p in roles)

    eventually(copying, f"broker {broker} to be copying a partition", timeout=60)
    process = stack.brokers.brokers[broker]
    process.kill()
    time.sleep(1.0)
    process.start()


def test_scale_2_to_4_to_1_under_a_producer_and_a_consumer_group(
    stack: Stack, tmp_path: Path
) -> None:
    stack.create_topic(TOPIC, partitions=PARTITIONS)
    stack.ready_topic(TOPIC)
    offsets_before = placement(stack.placed_internal_topic())
    assert set(offsets_before.values()) == {0, 1}
    group = group_on(offsets_before, 1)  # its offsets must move: broker 1 goes in the end
    # Enough data that a throttled copy takes seconds.
    with SyncProducer(stack.brokers.urls[0], linger_ms=5) as producer:
        for future in [producer.send(TOPIC, b"x" * 2048) for _ in range(600)]:
            future.get()

    members: list[Member] = []
    try:
        with Producing(stack.brokers.urls[0]) as producing:
            for name in ("a", "b"):
                url = stack.brokers.urls[0]
                # Nobody is killed here: a session long enough that a busy machine never
                # ends one, so a rebalance below can only come from the scaling.
                member = Member(url, "cooperative-sticky", tmp_path, name, group, TOPIC, 10_000)
                members.append(member)
            eventually(lambda: committed(stack, group) or None, "the group to commit", timeout=60)

            def settled() -> dict[str, Any] | None:
                # Both members, and every partition assigned: with cooperative-sticky the
                # generation that revokes a partition is Stable too, before the one that
                # hands it over.
                described = describe(stack, group)
                if not described or described["state"] != "Stable":
                    return None
                owned = [
                    p
                    for m in described["members"]
                    for a in m["assignment"] or ()
                    for p in a["partitions"]
                ]
                both = len(described["members"]) == 2
                return described if both and sorted(owned) == list(range(PARTITIONS)) else None

            generation = eventually(settled, "both members in one generation")["generation"]

            # Scale out 2 -> 4, killing a receiver mid-copy.
            stack.patch_spec("clusters", CLUSTER, {"brokers": 4})
            mark_ready(stack, 2)
            mark_ready(stack, 3)
            kill_a_receiver_mid_copy(stack, 3)
            out = wait_rebalanced(stack, "the scale-out to 4 brokers")
            assert out["bytesCopied"] > 0
            assert set(placement(stack.status("topics", TOPIC)).values()) == {0, 1, 2, 3}
            assert set(placement(stack.status("topics", INTERNAL)).values()) == {0, 1, 2, 3}
            time.sleep(2.0)  # consume and commit on the new placement a while
            before_in = committed(stack, group)
            assert before_in, "the group committed nothing before the scale-in"

            # Scale in 4 -> 1, fast: brokers 1-3 are drained onto broker 0.
            stack.patch_spec(
                "clusters",
                CLUSTER,
                {"brokers": 1, "rebalance": {"throttleBytesPerSecond": 50_000_000}},
            )

            def shrunk() -> bool:
                return (
                    statefulset_replicas(stack) == 1
                    and rebalance_status(stack).get("phase") == "Idle"
                )

            try:
                eventually(shrunk, "the StatefulSet to shrink to one broker", timeout=150)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{stack.operator.tail()}") from None
            assert set(placement(stack.status("topics", TOPIC)).values()) == {0}
            assert set(placement(stack.status("topics", INTERNAL)).values()) == {0}
            # The group's offsets came along: nothing went back.
            after_in = committed(stack, group)
            assert all(after_in.get(p, -1) >= o for p, o in before_in.items()), (
                before_in,
                after_in,
            )
            # Its membership came along too: its coordinator moved, and no rebalance followed.
            after = describe(stack, group)
            assert after is not None and after["generation"] == generation, after
            time.sleep(2.0)

        acked = producing.acked
        assert len(acked) > 500
        seen = wait_until_all_consumed(
            members, {k: v.decode() for k, v in acked.items()}, time.monotonic() + 90
        )
        missing = sorted(acked.keys() - seen.keys())
        assert not missing, f"{len(missing)} acknowledged records never consumed: {missing[:5]}"
        assert all(seen[k] == v.decode() for k, v in acked.items())
        assert_one_member_per_generation(members)
        # Committed offsets were kept, so few records were given twice (those read since the
        # last commit before each rebalance); losing them would repeat everything.
        deliveries = sum(1 for m in members for _ in m.deliveries())
        assert deliveries < 1.25 * len(seen), (deliveries, len(seen))
        # Offsets are unchanged: every acknowledged record is where it was acknowledged.
        read = read_all(stack, PARTITIONS, acked)
        assert all(read.get(k) == v for k, v in acked.items())
        ends: dict[int, int] = {}
        for partition, offset in acked:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        eventually(
            lambda: all(committed(stack, group).get(p, -1) >= end for p, end in ends.items()),
            "the group to commit its last records",
            timeout=30,
        )
    finally:
        for member in members:
            if member.proc.poll() is None:
                member.stop(signal.SIGTERM)
