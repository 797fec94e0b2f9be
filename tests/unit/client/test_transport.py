"""The transport's error decoding and URL handling, and the models parsed from broker JSON."""

from __future__ import annotations

import json
import socket

import pytest

from millstream import errors
from millstream.client.admin import Admin
from millstream.client.models import PartitionInfo, TopicDescription
from millstream.client.transport import Transport, error_from_response, topic_path


def body(code: str, message: str = "m") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("unknown_topic", errors.UnknownTopic),
        ("offset_out_of_range", errors.OffsetOutOfRange),
        ("topic_exists", errors.TopicExists),
        ("storage_error", errors.StorageError),
        ("invalid_config", errors.InvalidConfig),
    ],
)
def test_the_broker_error_code_picks_the_class(
    code: str, cls: type[errors.MillstreamError]
) -> None:
    error = error_from_response(400, body(code, "why"))
    assert type(error) is cls
    assert error.message == "why"


@pytest.mark.parametrize(
    ("status", "cls", "retriable"),
    [
        (400, errors.InvalidRequest, False),
        (404, errors.NotFound, False),
        (503, errors.BrokerUnavailable, True),
        (500, errors.MillstreamError, False),
    ],
)
def test_an_unknown_code_from_a_newer_broker_keeps_its_name_and_its_status_class(
    status: int, cls: type[errors.MillstreamError], retriable: bool
) -> None:
    error = error_from_response(status, body("quota_exceeded"))
    assert type(error) is cls and error.retriable is retriable
    assert error.code == "quota_exceeded" and error.message == "m"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (404, errors.NotFound),
        (416, errors.OffsetOutOfRange),
        (400, errors.InvalidRequest),
        (502, errors.BrokerUnavailable),
        (503, errors.BrokerUnavailable),
        (504, errors.RequestTimedOut),
        (500, errors.MillstreamError),
    ],
)
def test_a_body_that_is_not_ours_falls_back_on_the_status(
    status: int, cls: type[errors.MillstreamError]
) -> None:
    error = error_from_response(status, b"<html>Bad Gateway</html>")
    assert type(error) is cls
    assert f"HTTP {status}" in error.message
    assert error.retriable == cls.retriable


def test_topic_names_are_escaped_in_paths() -> None:
    assert topic_path("a/b c", "partitions", 0) == "/v1/topics/a%2Fb%20c/partitions/0"


@pytest.mark.parametrize("url", ["127.0.0.1:9092", "http://a:1,b:2", "", " , "])
def test_a_url_without_a_scheme_is_refused(url: str) -> None:
    with pytest.raises(errors.InvalidRequest):
        Transport(url)


def test_several_bootstrap_urls_are_comma_separated() -> None:
    transport = Transport(" http://a:1/, http://b:2 ,http://a:1")
    assert transport.urls == ("http://a:1", "http://b:2") and transport.url == "http://a:1"
    assert transport.router.bootstraps == transport.urls


async def test_a_port_nobody_listens_on_is_broker_unavailable() -> None:
    with socket.socket() as s:  # a free port, closed again at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Admin(f"http://127.0.0.1:{port}") as admin:
        with pytest.raises(errors.BrokerUnavailable) as caught:
            await admin.list_topics()
    assert caught.value.retriable
    assert f"127.0.0.1:{port}" in caught.value.message


def test_topic_description_from_broker_json() -> None:
    described = TopicDescription.from_json(
        {
            "name": "orders",
            "partitions": [
                {"partition": 0, "earliest_offset": 0, "latest_offset": 5, "size_bytes": 300}
            ],
            "config": {"retention.ms": 1000},
        }
    )
    assert described.partition_count == 1
    assert described.partitions[0] == PartitionInfo(0, 0, 5, 300)
    assert described.config["retention.ms"] == 1000
    with pytest.raises(errors.MillstreamError):
        TopicDescription.from_json({"name": "x"})
