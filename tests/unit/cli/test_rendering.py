"""What the commands print: tables, descriptions, JSON records, and produce's line splitting."""

from __future__ import annotations

import json

from millstream.cli.consume import render_json, render_value
from millstream.cli.output import human_bytes, table
from millstream.cli.produce import to_records
from millstream.cli.topics import render_description
from millstream.client.models import (
    ConsumerRecord,
    PartitionInfo,
    ProducerRecord,
    TopicDescription,
)


def test_tables_align_columns_like_kubectl() -> None:
    text = table(("NAME", "PARTITIONS"), [("orders", 3), ("a-much-longer-name", 12)])
    assert text.splitlines() == [
        "NAME                 PARTITIONS",
        "orders               3",
        "a-much-longer-name   12",
    ]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0B",
        "1023B",
        "1.0KiB",
        "1.5KiB",
        "5.0GiB",
    ]


def test_description_shows_fields_config_and_partitions() -> None:
    topic = TopicDescription(
        "orders",
        (PartitionInfo(0, 0, 10, 2048), PartitionInfo(1, 5, 7, 100)),
        {"retention.ms": 1000, "flush.ms": 0},
    )
    lines = render_description(topic).splitlines()
    assert lines[:3] == ["Name:        orders", "Partitions:  2", "Config:"]
    assert lines[3:5] == ["  flush.ms:      0", "  retention.ms:  1000"]
    assert lines[6].split() == ["PARTITION", "EARLIEST", "LATEST", "RECORDS", "SIZE"]
    assert lines[7].split() == ["0", "0", "10", "10", "2.0KiB"]
    assert lines[8].split() == ["1", "5", "7", "2", "100B"]


def test_json_records_carry_binary_as_base64() -> None:
    record = ConsumerRecord("t", 1, 7, 1000, b"\xff", "h\u00e9".encode(), (("h", b"v"),))
    document = json.loads(render_json(record))
    assert document == {
        "topic": "t",
        "partition": 1,
        "offset": 7,
        "timestamp": 1000,
        "key": None,
        "key_base64": "/w==",
        "value": "h\u00e9",
        "headers": [{"key": "h", "value": "v"}],
    }
    assert render_value(record) == "h\u00e9\n".encode()
    assert render_value(record._replace(value=None)) == b"\n"


def test_lines_split_at_the_first_key_separator() -> None:
    assert to_records([b"a", b"b"], None, None) == [b"a", b"b"]
    assert to_records([b"k:v:w", b"novalue", b":v"], b":", None) == [
        ProducerRecord(b"v:w", b"k"),
        ProducerRecord(b"novalue", None),
        ProducerRecord(b"v", b""),
    ]
    assert to_records([b"x"], None, 2) == [ProducerRecord(b"x", None, (), 2)]
