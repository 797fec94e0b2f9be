"""The HTTP API against a real broker process: every route, and every kind of bad input."""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from pathlib import Path

import pytest

from millstream.partitioner import partition_for_key
from millstream.records import BatchBuilder, decode_batch, iter_batches
from tests.support.broker import BrokerProcess
from tests.support.http import call

BATCH = "application/vnd.kafka.record-batch"


def create(broker: BrokerProcess, name: str, partitions: int = 1, **config: object) -> None:
    body = {"name": name, "partitions": partitions, "config": config}
    reply = call("POST", f"{broker.url}/v1/topics", body)
    assert reply.status == 201, reply.body


def fetch(broker: BrokerProcess, topic: str, partition: int, query: str = "") -> dict:
    reply = call("GET", f"{broker.url}/v1/topics/{topic}/partitions/{partition}/records?{query}")
    assert reply.status == 200, reply.body
    return reply.json


def test_json_round_trip_keeps_keys_values_headers_and_order(broker: BrokerProcess) -> None:
    create(broker, "orders", partitions=3)
    records = [
        {"key": "alice", "value": "first", "headers": [{"key": "h", "value": "v"}]},
        {"key": "bob", "value": "second", "timestamp": 1_700_000_000_000},
        {"value": "to-two", "partition": 2},
        {"key_base64": base64.b64encode(b"\xff\x00").decode(), "value_base64": "/wAB"},
        {"key": "tomb", "value": None},
    ]
    reply = call("POST", f"{broker.url}/v1/topics/orders/records", {"records": records})
    assert reply.status == 200, reply.body
    offsets = reply.json["offsets"]
    assert len(offsets) == 5
    assert offsets[0]["partition"] == partition_for_key(b"alice", 3)
    assert offsets[1]["partition"] == partition_for_key(b"bob", 3)
    assert offsets[2]["partition"] == 2
    assert offsets[3]["partition"] == partition_for_key(b"\xff\x00", 3)

    def stored(i: int) -> dict:
        at = offsets[i]
        got = fetch(broker, "orders", at["partition"], f"offset={at['offset']}&max_records=1")
        assert got["records"][0]["offset"] == at["offset"]
        return got["records"][0]

    assert stored(0)["key"] == "alice"
    assert stored(0)["value"] == "first"
    assert stored(0)["headers"] == [{"key": "h", "value": "v"}]
    assert stored(1)["timestamp"] == 1_700_000_000_000
    assert stored(2)["value"] == "to-two"
    binary = stored(3)
    assert binary["key"] is None and base64.b64decode(binary["key_base64"]) == b"\xff\x00"
    assert binary["value"] is None and binary["value_base64"] == "/wAB"
    assert stored(4)["value"] is None and "value_base64" not in stored(4)


def test_unkeyed_records_of_one_request_share_a_partition(broker: BrokerProcess) -> None:
    create(broker, "sticky", partitions=4)
    body = {"records": [{"value": str(i)} for i in range(50)]}
    offsets = call("POST", f"{broker.url}/v1/topics/sticky/records", body).json["offsets"]
    assert len({o["partition"] for o in offsets}) == 1
    assert [o["offset"] for o in offsets] == list(range(50))


def test_utf8_values_read_back_as_the_same_string(broker: BrokerProcess) -> None:
    create(broker, "text")
    value = "naïve café ✓ 日本"
    call("POST", f"{broker.url}/v1/topics/text/records", {"records": [{"value": value}]})
    assert fetch(broker, "text", 0)["records"][0]["value"] == value
    encoded = fetch(broker, "text", 0, "encoding=base64")["records"][0]
    assert base64.b64decode(encoded["value_base64"]).decode() == value


def test_raw_batches_in_and_out(broker: BrokerProcess) -> None:
    create(broker, "raw")
    url = f"{broker.url}/v1/topics/raw/partitions/0/batches"
    offsets = []
    for n in range(3):
        builder = BatchBuilder()
        for i in range(100):
            builder.append(f"v{n}-{i}".encode(), key=f"k{i}".encode())
        reply = call("POST", url, data=builder.build(), headers={"Content-Type": BATCH})
        assert reply.status == 200, reply.body
        offsets.append((reply.json["base_offset"], reply.json["last_offset"]))
    assert offsets == [(0, 99), (100, 199), (200, 299)]

    reply = call(
        "GET",
        f"{broker.url}/v1/topics/raw/partitions/0/records?offset=150",
        headers={"Accept": BATCH},
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == BATCH
    assert reply.headers["Millstream-High-Watermark"] == "300"
    assert reply.headers["Millstream-Next-Offset"] == "300"
    records = [
        r for info in iter_batches(reply.body) for r in decode_batch(reply.body, info.position)
    ]
    # Whole batches come back, starting with the one that holds offset 150.
    assert records[0].offset == 100
    assert records[50].value == b"v1-50"
    assert records[-1].offset == 299


def test_fetch_pages_with_next_offset_and_max_records(broker: BrokerProcess) -> None:
    create(broker, "pages")
    body = {"records": [{"value": str(i)} for i in range(25)]}
    call("POST", f"{broker.url}/v1/topics/pages/records", body)
    seen, offset = [], 0
    while True:
        page = fetch(broker, "pages", 0, f"offset={offset}&max_records=10")
        if not page["records"]:
            break
        seen += [r["value"] for r in page["records"]]
        offset = page["next_offset"]
        assert page["high_watermark"] == 25
    assert seen == [str(i) for i in range(25)]


def test_long_poll_returns_when_data_arrives(broker: BrokerProcess) -> None:
    create(broker, "poll")
    timer = threading.Timer(
        0.3,
        lambda: call("POST", f"{broker.url}/v1/topics/poll/records", {"records": [{"value": "x"}]}),
    )
    timer.start()
    got = fetch(broker, "poll", 0, "offset=0&wait_ms=10000")
    timer.join()
    assert [r["value"] for r in got["records"]] == ["x"]


def test_long_poll_times_out_empty(broker: BrokerProcess) -> None:
    create(broker, "quiet")
    got = fetch(broker, "quiet", 0, "offset=0&wait_ms=200")
    assert got == {"records": [], "next_offset": 0, "high_watermark": 0}


def read_stream_while_producing(
    broker: BrokerProcess, topic: str, query: str, accept: str
) -> tuple[bytes, str]:
    """Read a stream from offset 0 of a new topic holding "a" while "b" and "c" arrive
    0.3 s later; the body and its content type."""
    create(broker, topic)
    call("POST", f"{broker.url}/v1/topics/{topic}/records", {"records": [{"value": "a"}]})
    later = threading.Timer(
        0.3,
        lambda: call(
            "POST",
            f"{broker.url}/v1/topics/{topic}/records",
            {"records": [{"value": "b"}, {"value": "c"}]},
        ),
    )
    later.start()
    req = urllib.request.Request(
        f"{broker.url}/v1/topics/{topic}/partitions/0/records?offset=0&{query}",
        headers={"Accept": accept},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.read(), resp.headers["Content-Type"]
    finally:
        later.join()


@pytest.mark.parametrize("accept", ["application/x-ndjson", "text/event-stream"])
def test_stream_follows_the_log(broker: BrokerProcess, accept: str) -> None:
    text, _ = read_stream_while_producing(broker, "follow", "max_records=3", accept)
    text = text.decode()
    if accept == "text/event-stream":
        events = [e for e in text.split("\n\n") if e.startswith("id:")]
        assert [e.split("\n")[0] for e in events] == ["id: 0", "id: 1", "id: 2"]
        values = [json.loads(e.split("data: ", 1)[1])["value"] for e in events]
    else:
        values = [json.loads(line)["value"] for line in text.splitlines()]
    assert values == ["a", "b", "c"]


def test_offset_lookup_by_position_and_time(broker: BrokerProcess) -> None:
    create(broker, "times")
    records = [{"value": str(i), "timestamp": 1_000 * (i + 1)} for i in range(5)]
    for record in records:  # one batch each, so the time index can tell them apart
        call("POST", f"{broker.url}/v1/topics/times/records", {"records": [record]})
    base = f"{broker.url}/v1/topics/times/partitions/0/offsets"
    assert call("GET", f"{base}?at=earliest").json == {"partition": 0, "offset": 0}
    assert call("GET", f"{base}?at=latest").json == {"partition": 0, "offset": 5}
    assert call("GET", f"{base}?at=3000").json["offset"] == 2
    assert call("GET", f"{base}?at=2500").json["offset"] == 2
    assert call("GET", f"{base}?at=99000").json["offset"] == 5
    assert call("GET", f"{base}?at=yesterday").error_code == "invalid_request"


def test_topic_lifecycle(broker: BrokerProcess) -> None:
    create(broker, "life", partitions=2, **{"retention.ms": 60000})
    listed = call("GET", f"{broker.url}/v1/topics").json["topics"]
    assert {"name": "life", "partitions": 2, "internal": False} in listed
    call(
        "POST",
        f"{broker.url}/v1/topics/life/records",
        {"records": [{"value": "x", "partition": 1}]},
    )
    described = call("GET", f"{broker.url}/v1/topics/life").json
    assert described["config"]["retention.ms"] == 60000
    assert described["partitions"][1]["latest_offset"] == 1
    assert described["partitions"][1]["size_bytes"] > 0

    grown = call(
        "PATCH",
        f"{broker.url}/v1/topics/life",
        {"partitions": 5, "config": {"retention.ms": "1000"}},
    )
    assert grown.status == 200, grown.body
    assert len(grown.json["partitions"]) == 5
    assert grown.json["config"]["retention.ms"] == 1000
    assert grown.json["partitions"][1]["latest_offset"] == 1

    assert call("DELETE", f"{broker.url}/v1/topics/life").status == 204
    assert call("GET", f"{broker.url}/v1/topics/life").error_code == "unknown_topic"
    topic_dirs = list((broker.data_dir / "topics").glob("life*"))
    assert topic_dirs == []
    create(broker, "life")  # the name is free again, and empty
    assert call("GET", f"{broker.url}/v1/topics/life").json["partitions"][0]["latest_offset"] == 0


def test_internal_topics_are_the_brokers_own(broker: BrokerProcess) -> None:
    listed = call("GET", f"{broker.url}/v1/topics").json["topics"]
    assert all(not t["internal"] for t in listed)
    everything = call("GET", f"{broker.url}/v1/topics?internal=true").json["topics"]
    assert {"name": "__group_offsets", "partitions": 16, "internal": True} in everything
    assert call("GET", f"{broker.url}/v1/topics?internal=yes").error_code == "invalid_request"
    refused = [
        call("POST", f"{broker.url}/v1/topics", {"name": "__mine"}),
        call("POST", f"{broker.url}/v1/topics/__group_offsets/records", {"records": [{}]}),
        call(
            "POST",
            f"{broker.url}/v1/topics/__group_offsets/partitions/0/batches",
            data=b"x",
            headers={"Content-Type": "application/vnd.kafka.record-batch"},
        ),
        call("PATCH", f"{broker.url}/v1/topics/__group_offsets", {"partitions": 20}),
        call("DELETE", f"{broker.url}/v1/topics/__group_offsets"),
    ]
    assert [(r.status, r.error_code) for r in refused] == [(400, "invalid_topic_name")] * 5
    assert "reserved" in refused[0].json["error"]["message"]
    # Readable, as Kafka's internal topics are.
    described = call("GET", f"{broker.url}/v1/topics/__group_offsets").json
    assert len(described["partitions"]) == 16


def test_health_readiness_metrics_and_openapi(broker: BrokerProcess) -> None:
    assert call("GET", f"{broker.url}/healthz").status == 200
    assert call("GET", f"{broker.url}/readyz").status == 200
    create(broker, "seen")
    call("POST", f"{broker.url}/v1/topics/seen/records", {"records": [{"value": "x"}] * 3})
    fetch(broker, "seen", 0)
    text = call("GET", f"{broker.url}/metrics").body.decode()
    assert 'millstream_records_in_total{topic="seen"} 3.0' in text
    assert 'millstream_records_out_total{topic="seen"} 3.0' in text
    assert 'millstream_log_end_offset{partition="0",topic="seen"} 3.0' in text
    assert "millstream_fsync_duration_seconds_count" in text
    assert 'millstream_http_request_duration_seconds_count{code="200",method="POST"' in text
    spec = call("GET", f"{broker.url}/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert "/v1/topics/{topic}/partitions/{partition}/batches" in spec["paths"]


def test_a_deleted_topic_leaves_no_metrics_behind(broker: BrokerProcess) -> None:
    # Topics created and deleted by the thousand must not grow the metrics for ever.
    create(broker, "passing")
    call("POST", f"{broker.url}/v1/topics/passing/records", {"records": [{"value": "x"}]})
    fetch(broker, "passing", 0)
    assert 'topic="passing"' in call("GET", f"{broker.url}/metrics").body.decode()
    assert call("DELETE", f"{broker.url}/v1/topics/passing").status == 204
    assert 'topic="passing"' not in call("GET", f"{broker.url}/metrics").body.decode()


def test_graceful_stop_then_restart_keeps_everything(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        create(broker, "keep", partitions=2, **{"segment.bytes": 4096})
        for n in range(20):
            body = {"records": [{"key": f"k{n}-{i}", "value": "v" * 100} for i in range(10)]}
            assert call("POST", f"{broker.url}/v1/topics/keep/records", body).status == 200
        before = call("GET", f"{broker.url}/v1/topics/keep").json
        assert broker.stop() == 0
        broker.start()
        after = call("GET", f"{broker.url}/v1/topics/keep").json
        assert after == before
        values = [
            r["key"]
            for p in range(2)
            for r in fetch(broker, "keep", p, "max_records=1000")["records"]
        ]
        assert sorted(values) == sorted(f"k{n}-{i}" for n in range(20) for i in range(10))
    finally:
        broker.kill()


def test_offset_lookup_by_time_is_exact_inside_a_batch(broker: BrokerProcess) -> None:
    create(broker, "inside")
    records = [{"value": str(i), "timestamp": 1_000 * (i + 1)} for i in range(5)]
    call("POST", f"{broker.url}/v1/topics/inside/records", {"records": records})  # one batch
    base = f"{broker.url}/v1/topics/inside/partitions/0/offsets"
    assert call("GET", f"{base}?at=3000").json["offset"] == 2
    assert call("GET", f"{base}?at=2001").json["offset"] == 2
    assert call("GET", f"{base}?at=0").json["offset"] == 0
    assert call("GET", f"{base}?at=5001").json["offset"] == 5


def test_raw_stream_follows_the_log_in_whole_batches(broker: BrokerProcess) -> None:
    body, content_type = read_stream_while_producing(
        broker, "rawfollow", "follow=true&max_records=3", BATCH
    )
    assert content_type == BATCH
    batches = list(iter_batches(body))
    assert [(b.base_offset, b.record_count) for b in batches] == [(0, 1), (1, 2)]
    values = [r.value for b in batches for r in decode_batch(body, b.position)]
    assert values == [b"a", b"b", b"c"]
