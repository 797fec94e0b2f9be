"""JSON records: parsing produce bodies and rendering fetched records."""

from __future__ import annotations

import pytest

from millstream.broker.http.json_records import parse_produce_body, render_record
from millstream.errors import InvalidRequest
from millstream.records import Record


def test_parse_all_fields() -> None:
    (record,) = parse_produce_body(
        {
            "records": [
                {
                    "key": "k",
                    "value_base64": "AAE=",
                    "headers": {"a": "b"},
                    "partition": 2,
                    "timestamp": 5,
                }
            ]
        }
    )
    assert record.key == b"k"
    assert record.value == b"\x00\x01"
    assert record.headers == (("a", b"b"),)
    assert (record.partition, record.timestamp) == (2, 5)


def test_value_may_be_null_but_not_missing() -> None:
    assert parse_produce_body({"records": [{"value": None}]})[0].value is None
    with pytest.raises(InvalidRequest, match="needs"):
        parse_produce_body({"records": [{}]})


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"records": {}},
        {"records": [1]},
        {"records": [{"value": "v", "partition": True}]},
        {"records": [{"value": "v", "headers": [{"key": 1}]}]},
        {"records": [{"value": "v", "headers": [{"key": "k", "value": 5}]}]},
    ],
)
def test_bad_bodies(body: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_produce_body(body)


def test_render_text_binary_and_base64_only() -> None:
    record = Record(3, 9, b"\xff", "é".encode(), (("h", b"x"), ("n", None)))
    assert render_record(record) == {
        "offset": 3,
        "timestamp": 9,
        "key": None,
        "key_base64": "/w==",
        "value": "é",
        "headers": [{"key": "h", "value": "x"}, {"key": "n", "value": None}],
    }
    forced = render_record(record, base64_only=True)
    assert forced["value"] is None and forced["value_base64"] == "w6k="
