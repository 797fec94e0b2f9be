"""JSON Schemas of the broker's request and response bodies, for the OpenAPI document.

Used by :mod:`millstream.broker.http.openapi`. The limits come from the code that enforces
them (partition count, records per request, base64, int64, topic settings' bounds), so the
document and the checks cannot disagree. Everything a request may omit may also be null: the
handlers read a null optional field as an absent one.
"""

from __future__ import annotations

from typing import Any

from millstream.broker.http.json_records import BASE64, MAX_RECORDS_PER_REQUEST
from millstream.broker.http.params import INT64_MAX
from millstream.broker.storage.config import BOUNDS as CONFIG_BOUNDS
from millstream.broker.storage.config import EXCLUDED as CONFIG_EXCLUDED
from millstream.broker.storage.log_manager import MAX_PARTITIONS


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: list[str], properties: dict[str, Any], closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:  # unknown fields are refused, so that a misspelt one is not silently dropped
        schema["additionalProperties"] = False
    return schema


_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_BASE64 = {"type": "string", "contentEncoding": "base64", "pattern": f"^{BASE64.pattern}$"}


def _config_value(name: str) -> dict[str, Any]:
    low, high = CONFIG_BOUNDS[name]
    number: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if name in CONFIG_EXCLUDED:
        number["not"] = {"const": CONFIG_EXCLUDED[name]}
    return {
        "anyOf": [
            number,
            # As Kafka tools send them; the same bounds apply once parsed.
            {"type": "string", "pattern": "^-?[0-9]+$"},
            {"type": "null", "description": "Back to the broker's default"},
        ]
    }


def _records_in() -> dict[str, Any]:
    def text_xor_base64(name: str) -> dict[str, Any]:
        # Both may be given if the text one is null: the shape a fetch returns binary data in.
        both = [name, f"{name}_base64"]
        return {"not": {"required": both, "properties": dict.fromkeys(both, _STRING)}}

    header_map = {"type": "object", "additionalProperties": _TEXT_OR_NULL}
    record = _obj(
        [],
        {
            "key": _TEXT_OR_NULL,
            "key_base64": _nullable(_BASE64),
            "value": _TEXT_OR_NULL,
            "value_base64": _nullable(_BASE64),
            "headers": {
                "description": "An array of {key, value} objects, or the short form {key: value}",
                "anyOf": [
                    {"type": "array", "items": ref("Header")},
                    header_map,
                    {"type": "null"},
                ],
            },
            "partition": _nullable({"type": "integer", "minimum": 0}),
            "timestamp": _nullable({"type": "integer", "minimum": 0, "maximum": INT64_MAX}),
        },
    )
    record["description"] = "Give value (a string, stored as UTF-8, or null) or value_base64"
    record["anyOf"] = [{"required": ["value"]}, {"required": ["value_base64"]}]
    record["allOf"] = [text_xor_base64("key"), text_xor_base64("value")]
    header = _obj(
        ["key"], {"key": _STRING, "value": _TEXT_OR_NULL, "value_base64": _nullable(_BASE64)}
    )
    header["allOf"] = [text_xor_base64("value")]
    return {
        "Header": header,
        "NewRecord": record,
        "ProduceRequest": _obj(
            ["records"],
            {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RECORDS_PER_REQUEST,
                    "items": ref("NewRecord"),
                }
            },
        ),
    }


def _topics() -> dict[str, Any]:
    partitions = {"type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS}
    fields = ["partition", "earliest_offset", "latest_offset", "size_bytes"]
    partition_info = _obj(fields, dict.fromkeys(fields, _INTEGER))
    return {
        "TopicName": {
            "type": "string",
            "pattern": "^[a-zA-Z0-9._-]{1,249}$",
            "not": {"enum": [".", ".."]},
        },
        "TopicConfig": {
            "type": "object",
            "description": "Topic settings: integers, or decimal strings as Kafka tools send",
            "properties": {name: _config_value(name) for name in CONFIG_BOUNDS},
            "additionalProperties": False,
        },
        "NewTopic": _obj(
            ["name"],
            {
                "name": ref("TopicName"),
                "partitions": {**_nullable(partitions), "default": 1},
                "config": _nullable(ref("TopicConfig")),
            },
        ),
        "TopicChange": _obj(
            [],
            {
                "partitions": {**_nullable(partitions), "description": "Can only grow"},
                "config": _nullable(ref("TopicConfig")),
            },
        ),
        "TopicList": _obj(
            ["topics"],
            {
                "topics": {
                    "type": "array",
                    "items": _obj(
                        ["name", "partitions"], {"name": _STRING, "partitions": _INTEGER}
                    ),
                }
            },
        ),
        "Topic": _obj(
            ["name", "partitions", "config"],
            {
                "name": _STRING,
                "partitions": {"type": "array", "items": partition_info},
                "config": _obj(list(CONFIG_BOUNDS), dict.fromkeys(CONFIG_BOUNDS, _INTEGER)),
            },
        ),
    }


def _results() -> dict[str, Any]:
    offset = _obj(["partition", "offset"], {"partition": _INTEGER, "offset": _INTEGER})
    record = _obj(
        ["offset", "timestamp", "key", "value", "headers"],
        {
            "offset": _INTEGER,
            "timestamp": _INTEGER,
            "key": _TEXT_OR_NULL,
            "key_base64": _STRING,
            "value": _TEXT_OR_NULL,
            "value_base64": _STRING,
            "headers": {"type": "array", "items": ref("Header")},
        },
    )
    record["description"] = (
        "key and value are strings when valid UTF-8, otherwise null with *_base64"
    )
    return {
        "ProduceResult": _obj(
            ["offsets"],
            {"offsets": {"type": "array", "description": "One per record", "items": offset}},
        ),
        "BatchResult": _obj(
            ["partition", "base_offset", "last_offset"],
            {"partition": _INTEGER, "base_offset": _INTEGER, "last_offset": _INTEGER},
        ),
        "Record": record,
        "FetchResult": _obj(
            ["records", "next_offset", "high_watermark"],
            {
                "records": {"type": "array", "items": ref("Record")},
                "next_offset": _INTEGER,
                "high_watermark": _INTEGER,
            },
        ),
        "Offset": offset,
        "Status": _obj(["status"], {"status": _STRING}),
        "Error": _obj(
            ["error"],
            {
                "error": _obj(
                    ["code", "message"],
                    {
                        "code": {"type": "string", "description": "Stable, machine-readable"},
                        "message": _STRING,
                    },
                )
            },
        ),
    }


def schemas() -> dict[str, Any]:
    return {**_topics(), **_records_in(), **_results()}
