"""Every kind of bad input gets a 4xx with a stable code, writes nothing, and the broker carries on.

One broker serves the whole module; after each refused request the test checks that the
topic's offsets and sizes did not move and that the broker still answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millstream.records import BatchBuilder
from tests.support.broker import BrokerProcess
from tests.support.http import Reply, call

BATCH = "application/vnd.kafka.record-batch"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(Path(tmp_path_factory.mktemp("bad")) / "data").start()
    body = {"name": "t", "partitions": 2, "config": {"max.message.bytes": 2048}}
    assert call("POST", f"{proc.url}/v1/topics", body).status == 201
    ok = {"records": [{"value": "seed", "partition": 0}, {"value": "seed", "partition": 1}]}
    assert call("POST", f"{proc.url}/v1/topics/t/records", ok).status == 200
    try:
        yield proc
    finally:
        proc.kill()


def good_batch(n: int = 3) -> bytes:
    builder = BatchBuilder()
    for i in range(n):
        builder.append(f"value-{i}".encode())
    return builder.build()


def flipped(batch: bytes, at: int) -> bytes:
    raw = bytearray(batch)
    raw[at] ^= 0xFF
    return bytes(raw)


def _records(body: Any) -> tuple[str, str, dict[str, Any]]:
    return ("POST", "/v1/topics/t/records", {"json": body})


CASES: dict[str, tuple[str, str, dict[str, Any], int, str]] = {
    # name: (method, path, request kwargs, status, code)
    "malformed json": ("POST", "/v1/topics", {"data": b"{nope"}, 400, "malformed_json"),
    "empty body": ("POST", "/v1/topics", {"data": b""}, 400, "malformed_json"),
    "topic name not a string": (
        "POST",
        "/v1/topics",
        {"json": {"name": 5}},
        400,
        "invalid_topic_name",
    ),
    "invalid topic name": (
        "POST",
        "/v1/topics",
        {"json": {"name": "a/b"}},
        400,
        "invalid_topic_name",
    ),
    "topic name too long": (
        "POST",
        "/v1/topics",
        {"json": {"name": "x" * 250}},
        400,
        "invalid_topic_name",
    ),
    "dot topic name": ("POST", "/v1/topics", {"json": {"name": ".."}}, 400, "invalid_topic_name"),
    "zero partitions": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "partitions": 0}},
        400,
        "invalid_partitions",
    ),
    "partitions not int": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "partitions": "3"}},
        400,
        "invalid_partitions",
    ),
    "partitions bool": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "partitions": True}},
        400,
        "invalid_partitions",
    ),
    "unknown config": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": {"colour": 1}}},
        400,
        "invalid_config",
    ),
    "config out of range": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": {"segment.bytes": 1}}},
        400,
        "invalid_config",
    ),
    "config not a number": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": {"retention.ms": "soon"}}},
        400,
        "invalid_config",
    ),
    "unknown create field": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "replicas": 3}},
        400,
        "invalid_request",
    ),
    "topic exists": ("POST", "/v1/topics", {"json": {"name": "t"}}, 409, "topic_exists"),
    "shrink partitions": (
        "PATCH",
        "/v1/topics/t",
        {"json": {"partitions": 1}},
        400,
        "invalid_partitions",
    ),
    "alter bad config": (
        "PATCH",
        "/v1/topics/t",
        {"json": {"config": {"flush.ms": -5}}},
        400,
        "invalid_config",
    ),
    "alter unknown topic": (
        "PATCH",
        "/v1/topics/nope",
        {"json": {"partitions": 3}},
        404,
        "unknown_topic",
    ),
    "describe unknown topic": ("GET", "/v1/topics/nope", {}, 404, "unknown_topic"),
    "delete unknown topic": ("DELETE", "/v1/topics/nope", {}, 404, "unknown_topic"),
    "produce unknown topic": (
        "POST",
        "/v1/topics/nope/records",
        {"json": {"records": [{"value": "x"}]}},
        404,
        "unknown_topic",
    ),
    "records not a list": (*_records({"records": "x"}), 400, "invalid_request"),
    "no records": (*_records({"records": []}), 400, "invalid_request"),
    "record without value": (*_records({"records": [{"key": "k"}]}), 400, "invalid_request"),
    "value is a number": (*_records({"records": [{"value": 5}]}), 400, "invalid_request"),
    "key is an object": (
        *_records({"records": [{"value": "v", "key": {}}]}),
        400,
        "invalid_request",
    ),
    "bad base64": (*_records({"records": [{"value_base64": "***"}]}), 400, "invalid_request"),
    "value and value_base64": (
        *_records({"records": [{"value": "a", "value_base64": "YQ=="}]}),
        400,
        "invalid_request",
    ),
    "negative timestamp": (
        *_records({"records": [{"value": "v", "timestamp": -1}]}),
        400,
        "invalid_request",
    ),
    "headers not a list": (
        *_records({"records": [{"value": "v", "headers": "h"}]}),
        400,
        "invalid_request",
    ),
    "unknown record field": (
        *_records({"records": [{"value": "v", "vale": 1}]}),
        400,
        "invalid_request",
    ),
    "partition out of range": (
        *_records({"records": [{"value": "ok", "partition": 0}, {"value": "v", "partition": 9}]}),
        404,
        "unknown_partition",
    ),
    "one bad record refuses all": (
        *_records({"records": [{"value": "ok"}, {"value": 1}]}),
        400,
        "invalid_request",
    ),
    "record too large": (*_records({"records": [{"value": "x" * 4096}]}), 413, "record_too_large"),
    "batch bad crc": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": flipped(good_batch(), 70), "headers": {"Content-Type": BATCH}},
        400,
        "corrupt_batch",
    ),
    "batch bad magic": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": flipped(good_batch(), 16), "headers": {"Content-Type": BATCH}},
        400,
        "corrupt_batch",
    ),
    "batch truncated": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": good_batch()[:-5], "headers": {"Content-Type": BATCH}},
        400,
        "corrupt_batch",
    ),
    "good batch then garbage": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": good_batch() + b"\x00" * 30, "headers": {"Content-Type": BATCH}},
        400,
        "corrupt_batch",
    ),
    "batch too large": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": good_batch(400), "headers": {"Content-Type": BATCH}},
        413,
        "record_too_large",
    ),
    "batch wrong content type": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": good_batch(), "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "batch unknown partition": (
        "POST",
        "/v1/topics/t/partitions/7/batches",
        {"data": good_batch(), "headers": {"Content-Type": BATCH}},
        404,
        "unknown_partition",
    ),
    "batch partition not a number": (
        "POST",
        "/v1/topics/t/partitions/x/batches",
        {"data": good_batch(), "headers": {"Content-Type": BATCH}},
        404,
        "unknown_partition",
    ),
    "fetch unknown partition": (
        "GET",
        "/v1/topics/t/partitions/2/records",
        {},
        404,
        "unknown_partition",
    ),
    "fetch offset past end": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=1000",
        {},
        416,
        "offset_out_of_range",
    ),
    "fetch offset not a number": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=ten",
        {},
        400,
        "invalid_request",
    ),
    "fetch negative offset": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=-1",
        {},
        400,
        "invalid_request",
    ),
    "fetch max_records zero": (
        "GET",
        "/v1/topics/t/partitions/0/records?max_records=0",
        {},
        400,
        "invalid_request",
    ),
    "fetch wait too long": (
        "GET",
        "/v1/topics/t/partitions/0/records?wait_ms=99999999",
        {},
        400,
        "invalid_request",
    ),
    "fetch bad encoding": (
        "GET",
        "/v1/topics/t/partitions/0/records?encoding=hex",
        {},
        400,
        "invalid_request",
    ),
    "bad acks": (
        "POST",
        "/v1/topics/t/records?acks=2",
        {"json": {"records": [{"value": "v"}]}},
        400,
        "invalid_request",
    ),
    "unknown route": ("GET", "/v2/everything", {}, 404, "not_found"),
    "wrong method": ("PUT", "/v1/topics", {"json": {}}, 405, "method_not_allowed"),
}


def send(broker: BrokerProcess, method: str, path: str, kwargs: dict[str, Any]) -> Reply:
    kwargs = dict(kwargs)
    return call(method, broker.url + path, kwargs.pop("json", None), **kwargs)


def snapshot(broker: BrokerProcess) -> Any:
    topics = call("GET", f"{broker.url}/v1/topics").json
    return topics, call("GET", f"{broker.url}/v1/topics/t").json


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_whole(broker: BrokerProcess, case: str) -> None:
    method, path, kwargs, status, code = CASES[case]
    before = snapshot(broker)
    reply = send(broker, method, path, kwargs)
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.error_code == code
    assert reply.json["error"]["message"]
    assert snapshot(broker) == before
    assert call("GET", f"{broker.url}/healthz").status == 200


def test_body_too_large(broker: BrokerProcess) -> None:
    before = snapshot(broker)
    huge = b"\x00" * (65 * 1024 * 1024)
    reply = call(
        "POST",
        f"{broker.url}/v1/topics/t/partitions/0/batches",
        data=huge,
        headers={"Content-Type": BATCH},
    )
    assert reply.status == 413
    assert reply.error_code == "body_too_large"
    assert snapshot(broker) == before


def test_good_requests_still_work_afterwards(broker: BrokerProcess) -> None:
    reply = call(
        "POST",
        f"{broker.url}/v1/topics/t/partitions/0/batches",
        data=good_batch(),
        headers={"Content-Type": BATCH},
    )
    assert reply.status == 200, reply.body
    got = call("GET", f"{broker.url}/v1/topics/t/partitions/0/records?offset=0").json
    assert [r["value"] for r in got["records"]] == ["seed", "value-0", "value-1", "value-2"]
