"""Three real broker processes as one cluster, with metadata pushed as the operator pushes it:
admin routes guarded by the token, each broker serving exactly its partitions and naming the
right broker for the others, metadata kept across a restart, and the Python client, a
consumer group and the CLI working through any one broker."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from millstream.client import Admin, Consumer, ConsumerRecord, Producer, ProducerRecord
from millstream.partitioner import partition_for_key
from millstream.records import BatchBuilder
from tests.support.broker import BrokerProcess
from tests.support.cluster import TestCluster, group_on, round_robin
from tests.support.http import call

BATCH = "application/vnd.kafka.record-batch"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    brokers = TestCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield brokers
    finally:
        brokers.stop()


def batch(*values: bytes) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(value)
    return builder.build()


# --- the admin API --------------------------------------------------------------------------


def test_admin_routes_need_the_token(cluster: TestCluster, broker: BrokerProcess) -> None:
    url = cluster.urls[0]
    body = {"epoch": 99, "brokers": [{"id": 0, "url": url}]}
    anonymous = call("PUT", f"{url}/v1/admin/cluster", body)
    assert (anonymous.status, anonymous.error_code) == (401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer " + "0" * len(cluster.token)}
    for method, path, payload in (
        ("PUT", "/v1/admin/cluster", body),
        ("PUT", "/v1/admin/topics/sneaky", {"partitions": 1, "placement": {"0": 0}}),
        ("DELETE", "/v1/admin/topics/sneaky", None),
    ):
        refused = call(method, url + path, payload, headers=wrong)
        assert (refused.status, refused.error_code) == (403, "forbidden"), refused.body
    # A broker started without a token file takes no admin call at all, not even a guess.
    closed = call("PUT", f"{broker.url}/v1/admin/cluster", body, headers=wrong)
    assert (closed.status, closed.error_code) == (403, "forbidden")
    assert call("GET", f"{broker.url}/v1/cluster").json["mode"] == "standalone"
    # Nothing changed.
    assert call("GET", f"{url}/v1/cluster").json["epoch"] == cluster.epoch


def test_pushes_are_checked(cluster: TestCluster) -> None:
    url = cluster.urls[1]
    brokers = [{"id": i, "url": u} for i, u in enumerate(cluster.urls)]
    stale = cluster.admin("PUT", url, "/v1/admin/cluster", {"epoch": 0, "brokers": brokers})
    assert (stale.status, stale.error_code) == (409, "stale_epoch")
    unknown = {"partitions": 2, "placement": {"0": 0, "1": 7}}
    placed = cluster.admin("PUT", url, "/v1/admin/topics/bad", unknown)
    assert (placed.status, placed.error_code) == (400, "invalid_placement")
    partial = cluster.admin(
        "PUT", url, "/v1/admin/topics/bad", {"partitions": 2, "placement": {"0": 0}}
    )
    assert (partial.status, partial.error_code) == (400, "invalid_placement")
    assert call("GET", f"{url}/v1/topics/bad").status == 404
    cluster.push_topic("pinned", 3)  # partition 2 on broker 2
    shrink = cluster.admin(
        "PUT", url, "/v1/admin/topics/pinned", {"partitions": 2, "placement": {"0": 0, "1": 1}}
    )
    assert (shrink.status, shrink.error_code) == (400, "invalid_partitions")
    # Dropping a broker that still holds partitions would orphan them.
    drop = {"epoch": cluster.epoch + 1, "brokers": brokers[:2]}
    orphaned = cluster.admin("PUT", url, "/v1/admin/cluster", drop)
    assert (orphaned.status, orphaned.error_code) == (400, "invalid_placement")


def test_the_cluster_view_shows_each_topics_epoch(cluster: TestCluster) -> None:
    # The operator adopts a topic with the epoch the brokers say (docs/cluster.md).
    placed = {"partitions": 3, "placement": round_robin(3, cluster.size), "topic_id": "id-fenced"}
    cluster.push_all("PUT", "/v1/admin/topics/fenced", {**placed, "epoch": 4})
    cluster.push_topic("fenced", 4)  # moves nothing, carries no epoch: the topic keeps 4
    cluster.push_topic("unfenced", 1)
    for url in cluster.urls:
        topics = {t["name"]: t for t in call("GET", f"{url}/v1/cluster").json["topics"]}
        assert (topics["fenced"]["partitions"], topics["fenced"]["epoch"]) == (4, 4)
        assert topics["unfenced"]["epoch"] is None


# --- serving partitions ---------------------------------------------------------------------


def test_each_broker_serves_exactly_its_partitions(cluster: TestCluster) -> None:
    cluster.push_topic("spread", 6, config={"retention.ms": 3_600_000})
    views = [call("GET", f"{u}/v1/cluster").json for u in cluster.urls]
    assert [v["broker_id"] for v in views] == [0, 1, 2]
    assert all(v["mode"] == "cluster" and v["brokers"] == views[0]["brokers"] for v in views)
    (spread,) = [t for t in views[0]["topics"] if t["name"] == "spread"]
    assert spread["placement"] == round_robin(6, 3) and spread["topic_id"] == "id-spread"

    for broker_id, broker in enumerate(cluster.brokers):
        topic_dir = broker.data_dir / "topics" / "spread"
        hosted = sorted(int(d.name) for d in topic_dir.iterdir() if d.is_dir())
        assert hosted == [p for p in range(6) if p % 3 == broker_id]
        described = call("GET", f"{broker.url}/v1/topics/spread").json
        assert described["config"]["retention.ms"] == 3_600_000
        for p in range(6):
            owner = cluster.owner("spread", p)
            base = f"{broker.url}/v1/topics/spread/partitions/{p}"
            replies = [
                call("POST", f"{base}/batches", data=batch(b"x"), headers={"Content-Type": BATCH}),
                call("GET", f"{base}/records?offset=0"),
                call("GET", f"{base}/offsets?at=latest"),
                call(
                    "POST",
                    f"{broker.url}/v1/topics/spread/records",
                    {"records": [{"value": "v", "partition": p}]},
                ),
            ]
            row = described["partitions"][p]
            assert row["broker"] == p % 3
            if owner is broker:
                assert [r.status for r in replies] == [200, 200, 200, 200]
                assert row["latest_offset"] == 0  # described before the writes above
            else:
                assert row["latest_offset"] is None and row["size_bytes"] is None
                for reply in replies:
                    assert reply.status == 421, reply.body
                    error = reply.json["error"]
                    assert error["code"] == "not_leader"
                    assert error["broker"] == {"id": p % 3, "url": owner.url}

    # Keyless JSON records stick to a partition of the broker they were sent to.
    answer = call(
        "POST", f"{cluster.urls[1]}/v1/topics/spread/records", {"records": [{"value": "a"}] * 5}
    )
    assert {o["partition"] % 3 for o in answer.json["offsets"]} == {1}


def test_topic_administration_is_refused_in_a_cluster(cluster: TestCluster) -> None:
    cluster.push_topic("owned", 3)
    url = cluster.urls[2]
    for method, path, body in (
        ("POST", "/v1/topics", {"name": "mine", "partitions": 1}),
        ("PATCH", "/v1/topics/owned", {"partitions": 4}),
        ("DELETE", "/v1/topics/owned", None),
    ):
        refused = call(method, url + path, body)
        assert (refused.status, refused.error_code) == (409, "managed_by_operator")
        assert "Topic resource" in refused.json["error"]["message"]
    assert call("GET", f"{url}/v1/topics/owned").status == 200

    cluster.push_all("DELETE", "/v1/admin/topics/owned")
    for broker in cluster.brokers:
        assert call("GET", f"{broker.url}/v1/topics/owned").status == 404
        assert not (broker.data_dir / "topics" / "owned").exists()
        names = [t["name"] for t in call("GET", f"{broker.url}/v1/cluster").json["topics"]]
        assert "owned" not in names


def test_metadata_and_data_survive_a_restart(cluster: TestCluster) -> None:
    cluster.push_topic("durable", 3)
    broker = cluster.brokers[1]
    reply = call(
        "POST",
        f"{broker.url}/v1/topics/durable/records",
        {"records": [{"value": "kept", "partition": 1}]},
    )
    assert reply.status == 200
    before = call("GET", f"{broker.url}/v1/cluster").json
    broker.restart()  # the same port, nobody pushes anything
    assert call("GET", f"{broker.url}/v1/cluster").json == before
    fetched = call("GET", f"{broker.url}/v1/topics/durable/partitions/1/records?offset=0").json
    assert [r["value"] for r in fetched["records"]] == ["kept"]
    moved = call("GET", f"{broker.url}/v1/topics/durable/partitions/2/offsets")
    assert moved.json["error"]["broker"]["id"] == 2
    refused = call("POST", f"{broker.url}/v1/topics", {"name": "mine"})
    assert refused.error_code == "managed_by_operator"


# --- clients --------------------------------------------------------------------------------


async def test_producer_and_consumer_through_any_broker(cluster: TestCluster) -> None:
    cluster.push_topic("routed", 6)
    keys = [b"key-%d" % i for i in range(60)]
    async with Producer(cluster.urls[2], linger_ms=1) as producer:
        await (await producer.send_many("routed", [ProducerRecord(k, key=k) for k in keys]))
        metadata = await producer.send_and_wait("routed", b"one", partition=4)
        assert metadata.partition == 4
    async with Consumer(cluster.urls[0], auto_offset_reset="earliest") as consumer:
        consumer.assign([("routed", p) for p in range(6)])
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 20
        while len(records) < 61 and time.monotonic() < deadline:
            records += await consumer.poll(timeout_ms=500)
        ends = await consumer.end_offsets([("routed", p) for p in range(6)])
    assert sorted(r.value for r in records if r.key) == sorted(keys)
    assert all(r.partition == partition_for_key(r.key, 6) for r in records if r.key)
    assert sum(ends.values()) == 61
    for broker_id, broker in enumerate(cluster.brokers):
        hosted = [p for p in range(6) if p % 3 == broker_id]
        stored = call("GET", f"{broker.url}/v1/topics/routed").json["partitions"]
        assert sum(stored[p]["latest_offset"] for p in hosted) == sum(
            ends[("routed", p)]
            for p in hosted  # type: ignore[index]
        )
    async with Admin(cluster.urls[1]) as admin:
        described = await admin.describe_topic("routed")
    assert [p.broker for p in described.partitions] == [0, 1, 2, 0, 1, 2]
    assert sum(p.latest_offset for p in described.partitions) == 61


async def test_clients_bootstrap_from_the_first_listed_broker_that_answers(
    cluster: TestCluster,
) -> None:
    cluster.push_topic("listed", 3)
    with socket.socket() as s:  # a port nobody listens on: a broker that is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    bootstrap = f"{down},{cluster.urls[1]}"
    async with Producer(bootstrap, linger_ms=1) as producer:
        sent = [await producer.send_and_wait("listed", b"v%d" % p, partition=p) for p in range(3)]
    assert sorted(m.partition for m in sent) == [0, 1, 2]
    async with Consumer(bootstrap, group_id="listed", auto_offset_reset="earliest") as consumer:
        consumer.subscribe(["listed"])
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 20
        while len(records) < 3 and time.monotonic() < deadline:
            records += await consumer.poll(timeout_ms=500)
        await consumer.commit()
    assert sorted(r.value for r in records) == [b"v0", b"v1", b"v2"]


async def test_a_consumer_group_across_brokers(cluster: TestCluster) -> None:
    cluster.push_topic("shared", 6)
    group = group_on(0, "crew")
    async with Producer(cluster.urls[1]) as producer:
        records = [ProducerRecord(b"%d" % i, partition=i % 6) for i in range(120)]
        await (await producer.send_many("shared", records))

    wrong = call(
        "POST",
        f"{cluster.urls[2]}/v1/groups/{group}/heartbeat",
        {"member_id": "m", "generation": 0},
    )
    assert (wrong.status, wrong.error_code) == (421, "not_coordinator")
    assert wrong.json["error"]["broker"] == {"id": 0, "url": cluster.urls[0]}

    settings = {"group_id": group, "session_timeout_ms": 2_000, "heartbeat_interval_ms": 200}
    consumers = [
        Consumer(url, auto_offset_reset="earliest", fetch_max_wait_ms=100, **settings)
        for url in cluster.urls[1:]  # neither is the coordinator
    ]
    seen: Counter[bytes] = Counter()
    try:
        for consumer in consumers:
            consumer.subscribe(["shared"])
        deadline = time.monotonic() + 30
        while sum(seen.values()) < 120 and time.monotonic() < deadline:
            for batch_ in await asyncio.gather(*(c.poll(timeout_ms=300) for c in consumers)):
                seen.update(r.value for r in batch_ if r.value is not None)
        assignments = [c.assignment() for c in consumers]
    finally:
        await asyncio.gather(*(c.close() for c in consumers))  # commits on close
    assert set(seen) == {b"%d" % i for i in range(120)}
    assert assignments[0] and assignments[1] and not assignments[0] & assignments[1]

    async with Admin(cluster.urls[2]) as admin:
        described = await admin.describe_group(group)
        listed = [g.group for g in await admin.list_groups()]
    assert group in listed
    assert described.lag == 0
    assert {(o.partition, o.committed, o.log_end_offset) for o in described.offsets} == {
        (p, 20, 20) for p in range(6)
    }


def cli(url: str, *args: str, input: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
    env["MILLSTREAM_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "millstream.cli.main", *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_the_cli_against_a_broker_that_owns_nothing(cluster: TestCluster, tmp_path: Path) -> None:
    placement = {"0": 0, "1": 1, "2": 0, "3": 1}  # broker 2 serves none of it
    cluster.push_topic("lines", 4, placement)
    elsewhere = cluster.urls[2]
    cli(
        elsewhere,
        "produce",
        "lines",
        "--key-separator",
        ":",
        input=b"".join(b"k%d:v%d\n" % (i, i) for i in range(20)),
    )
    values = cli(elsewhere, "consume", "lines", "--from-beginning").split()
    assert sorted(values) == sorted(f"v{i}" for i in range(20))
    described = json.loads(cli(elsewhere, "topics", "describe", "lines", "-o", "json"))
    assert [p["broker"] for p in described["partitions"]] == [0, 1, 0, 1]
    assert sum(p["latest_offset"] for p in described["partitions"]) == 20
    table = cli(elsewhere, "topics", "describe", "lines")
    assert "BROKER" in table
    group = group_on(1, "cli")
    cli(elsewhere, "consume", "lines", "--from-beginning", "--group", group)
    rows = json.loads(cli(elsewhere, "groups", "describe", group, "-o", "json"))
    assert rows["lag"] == 0
    assert group in cli(cluster.urls[0], "groups", "list")


def test_lag_is_null_for_a_partition_whose_broker_is_down(cluster: TestCluster) -> None:
    cluster.push_topic("patchy", 3)
    group = group_on(0, "patchy")
    coordinator, down = cluster.urls[0], cluster.brokers[2]
    offsets = [{"topic": "patchy", "partition": p, "offset": 0} for p in range(3)]
    assert (
        call("POST", f"{coordinator}/v1/groups/{group}/offsets", {"offsets": offsets}).status == 204
    )
    down.stop()
    try:
        started = time.monotonic()
        described = call("GET", f"{coordinator}/v1/groups/{group}").json
        assert time.monotonic() - started < 5
        rows = {row["partition"]: row for row in described["offsets"]}
        assert rows[2]["log_end_offset"] is None and rows[2]["lag"] is None
        assert rows[1]["log_end_offset"] == 0 and rows[1]["lag"] == 0  # broker 1 answered
        assert described["lag"] == 0
    finally:
        down.start()
    assert call("GET", f"{coordinator}/v1/groups/{group}").json["offsets"][2]["lag"] == 0


async def test_the_client_follows_a_moved_partition_and_a_bootstrap_broker_gone(
    cluster: TestCluster,
) -> None:
    cluster.push_topic("moving", 2, {"0": 0, "1": 1})
    async with Producer(cluster.urls[2], linger_ms=1) as producer:
        assert (await producer.send_and_wait("moving", b"a", partition=0)).offset == 0
        cluster.push_topic("moving", 2, {"0": 1, "1": 1})  # partition 0 moves to broker 1, empty
        assert (await producer.send_and_wait("moving", b"b", partition=0)).offset == 0
    served = call("GET", f"{cluster.urls[1]}/v1/topics/moving/partitions/0/records?offset=0")
    assert [r["value"] for r in served.json["records"]] == ["b"]

    bootstrap = cluster.brokers[2]
    async with Admin(bootstrap.url) as admin:
        await admin.offset_for("moving", 1, "latest")  # the metadata is known from here on
        bootstrap.stop()
        try:
            assert (await admin.topic_metadata("moving")).partition_count == 2
            assert await admin.offset_for("moving", 0, "latest") == 1
        finally:
            bootstrap.start()
