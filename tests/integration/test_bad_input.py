"""Every kind of bad input gets a 4xx with a stable code, writes nothing, and the broker carries on.

One broker serves the whole module; after each refused request the test checks that the
topic's offsets and sizes did not move and that the broker still answers.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crc32c import crc32c

from millstream.records import CRC_START, HEADER_SIZE, BatchBuilder
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


def _raw_records(records: bytes) -> tuple[str, str, dict[str, Any]]:
    """A produce body as bytes, for what json.dumps cannot write (lone surrogates, NaN)."""
    return ("POST", "/v1/topics/t/records", {"data": b'{"records": ' + records + b"}"})


# In a batch of one small record: length, attributes, timestamp delta, offset delta, key length.
KEY_LENGTH_AT = HEADER_SIZE + 4


def key_length_lies(length: int) -> bytes:
    """One record whose key length field says ``length``, under a CRC that holds."""
    builder = BatchBuilder()
    builder.append(b"v", None, timestamp=0)
    raw = bytearray(builder.build())
    raw[KEY_LENGTH_AT] = (length << 1) ^ (length >> 63)  # zig-zag, one byte for small values
    raw[17:21] = crc32c(bytes(raw[CRC_START:])).to_bytes(4, "big")
    return bytes(raw)


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
    # Found by fuzzing the API from its OpenAPI document (test_api_fuzz.py): each was a 500,
    # a silent acceptance of something the document refuses, or a wrong partition served.
    "timestamp past int64": (
        *_records({"records": [{"value": "v", "timestamp": 2**63}]}),
        400,
        "invalid_request",
    ),
    "lone surrogate value": (*_raw_records(b'[{"value": "\\ud800"}]'), 400, "invalid_request"),
    "lone surrogate key": (
        *_raw_records(b'[{"value": "v", "key": "\\udfff"}]'),
        400,
        "invalid_request",
    ),
    "lone surrogate header key": (
        *_raw_records(b'[{"value": "v", "headers": [{"key": "\\ud800"}]}]'),
        400,
        "invalid_request",
    ),
    "NaN is not JSON": (
        *_raw_records(b'[{"value": "v", "timestamp": NaN}]'),
        400,
        "malformed_json",
    ),
    "nesting too deep": ("POST", "/v1/topics", {"data": b"[" * 100_000}, 400, "malformed_json"),
    "unknown body field": (
        *_records({"records": [{"value": "v"}], "acks": "all"}),
        400,
        "invalid_request",
    ),
    "unknown header field": (
        *_records({"records": [{"value": "v", "headers": [{"key": "h", "vaule": "x"}]}]}),
        400,
        "invalid_request",
    ),
    "base64 with excess padding": (
        *_records({"records": [{"value_base64": "AAAA="}]}),
        400,
        "invalid_request",
    ),
    "config is an array": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": []}},
        400,
        "invalid_config",
    ),
    "config is zero": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": 0}},
        400,
        "invalid_config",
    ),
    "alter config is an array": (
        "PATCH",
        "/v1/topics/t",
        {"json": {"config": []}},
        400,
        "invalid_config",
    ),
    "config string with underscores": (
        "POST",
        "/v1/topics",
        {"json": {"name": "z", "config": {"retention.ms": "86_400_000"}}},
        400,
        "invalid_config",
    ),
    "partition is a superscript digit": (
        "GET",
        "/v1/topics/t/partitions/%C2%B2/records",
        {},
        404,
        "unknown_partition",
    ),
    "partition is an arabic-indic digit": (
        "GET",
        "/v1/topics/t/partitions/%D9%A1/records",
        {},
        404,
        "unknown_partition",
    ),
    "partition of 5000 digits": (
        "GET",
        "/v1/topics/t/partitions/" + "9" * 5000 + "/records",
        {},
        404,
        "unknown_partition",
    ),
    "offset past int64": (
        "GET",
        f"/v1/topics/t/partitions/0/records?offset={2**63}",
        {},
        400,
        "invalid_request",
    ),
    "offset left empty": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=",
        {},
        400,
        "invalid_request",
    ),
    "offset with underscores": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=1_0",
        {},
        400,
        "invalid_request",
    ),
    "offset is an arabic-indic digit": (
        "GET",
        "/v1/topics/t/partitions/0/records?offset=%D9%A1",
        {},
        400,
        "invalid_request",
    ),
    "lookup at a negative time": (
        "GET",
        "/v1/topics/t/partitions/0/offsets?at=-5",
        {},
        400,
        "invalid_request",
    ),
    "lookup at 5000 digits": (
        "GET",
        "/v1/topics/t/partitions/0/offsets?at=" + "9" * 5000,
        {},
        400,
        "invalid_request",
    ),
    "batch records run astray under a good CRC": (
        "POST",
        "/v1/topics/t/partitions/0/batches",
        {"data": key_length_lies(50), "headers": {"Content-Type": BATCH}},
        400,
        "corrupt_batch",
    ),
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


def test_wrong_method_names_the_allowed_ones(broker: BrokerProcess) -> None:
    reply = call("PUT", f"{broker.url}/v1/topics/t")
    assert reply.status == 405
    assert reply.error_code == "method_not_allowed"
    allowed = {method.strip() for method in reply.headers["Allow"].split(",")}
    assert allowed == {"DELETE", "GET", "HEAD", "PATCH"}


def test_a_stream_ends_when_its_topic_is_deleted(broker: BrokerProcess) -> None:
    # It used to go on for good, busy-looping on the deleted log and pinning a core.
    assert call("POST", f"{broker.url}/v1/topics", {"name": "short-lived"}).status == 201
    host, port = broker.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(
        "GET",
        "/v1/topics/short-lived/partitions/0/records?offset=0",
        headers={"Accept": "application/x-ndjson"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert call("DELETE", f"{broker.url}/v1/topics/short-lived").status == 204
    started = time.monotonic()
    assert response.read() == b""  # the stream ends: no timeout
    assert time.monotonic() - started < 5
    connection.close()


def test_what_the_document_allows_is_taken(broker: BrokerProcess) -> None:
    # JSON Schema counts 2.0 as an integer and the document says optional fields may be null.
    body = {"name": "lenient", "partitions": 2.0, "config": {"retention.ms": "86400000"}}
    reply = call("POST", f"{broker.url}/v1/topics", body)
    assert reply.status == 201, reply.body
    assert len(reply.json["partitions"]) == 2
    assert reply.json["config"]["retention.ms"] == 86_400_000
    assert (
        call("POST", f"{broker.url}/v1/topics", {"name": "nulls", "partitions": None}).status == 201
    )
    records = [
        {"value": "a", "partition": 1.0, "timestamp": 1.7e12, "headers": None},
        {"value_base64": None, "key": None, "key_base64": "AAE=", "headers": {"h": None}},
    ]
    reply = call("POST", f"{broker.url}/v1/topics/lenient/records", {"records": records})
    assert reply.status == 200, reply.body
    assert reply.json["offsets"][0] == {"partition": 1, "offset": 0}
    got = call("GET", f"{broker.url}/v1/topics/lenient/partitions/1/records?offset=0").json
    assert got["records"][0]["timestamp"] == 1_700_000_000_000


def test_a_negative_key_length_reads_back_as_null_as_in_kafka(broker: BrokerProcess) -> None:
    # Kafka reads any negative key or value length as null; the check at produce time and
    # every later read must agree, or a stored batch could not be served.
    assert call("POST", f"{broker.url}/v1/topics", {"name": "poison"}).status == 201
    reply = call(
        "POST",
        f"{broker.url}/v1/topics/poison/partitions/0/batches",
        data=key_length_lies(-2),
        headers={"Content-Type": BATCH},
    )
    assert reply.status == 200, reply.body
    readable = call("GET", f"{broker.url}/v1/topics/poison/partitions/0/records?offset=0")
    assert readable.status == 200, readable.body
    assert readable.json["records"][0]["key"] is None
    assert readable.json["records"][0]["value"] == "v"
