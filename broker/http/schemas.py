"""JSON Schemas of the broker's request and response bodies, for the OpenAPI document.

Used by :mod:`millstream.broker.http.openapi`. The limits come from the code that enforces
them (partition count, records per request, base64, int64, topic settings' bounds), so the
document and the checks cannot disagree. Everything a request may omit may also be null: the
handlers read a null optional field as an absent one.
"""

from __future__ import annotations

from typing import Any

from millstream.broker.http.groups import MAX_OFFSETS_PER_REQUEST
from millstream.broker.http.json_records import BASE64, MAX_RECORDS_PER_REQUEST
from millstream.broker.http.params import INT64_MAX
from millstream.broker.storage.config import BOUNDS as CONFIG_BOUNDS
from millstream.broker.storage.config import EXCLUDED as CONFIG_EXCLUDED
from millstream.broker.storage.log_manager import MAX_PARTITIONS


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj_schema(
    required: list[str], properties: dict[str, Any], closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:  # unknown fields are refused, so that a misspelt one is not silently dropped
        schema["additionalProperties"] = False
    return schema


INTEGER = {"type": "integer"}
_INTEGER = INTEGER
_INTEGER_OR_NULL = {"type": ["integer", "null"]}
STRING = {"type": "string"}
TEXT_OR_NULL = {"type": ["string", "null"]}
_STRING, _TEXT_OR_NULL = STRING, TEXT_OR_NULL
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
    record = obj_schema(
        [],
        {
            "key": _TEXT_OR_NULL,
            "key_base64": nullable(_BASE64),
            "value": _TEXT_OR_NULL,
            "value_base64": nullable(_BASE64),
            "headers": {
                "description": "An array of {key, value} objects, or the short form {key: value}",
                "anyOf": [
                    {"type": "array", "items": ref("Header")},
                    header_map,
                    {"type": "null"},
                ],
            },
            "partition": nullable({"type": "integer", "minimum": 0}),
            "timestamp": nullable({"type": "integer", "minimum": 0, "maximum": INT64_MAX}),
        },
    )
    record["description"] = "Give value (a string, stored as UTF-8, or null) or value_base64"
    record["anyOf"] = [{"required": ["value"]}, {"required": ["value_base64"]}]
    record["allOf"] = [text_xor_base64("key"), text_xor_base64("value")]
    header = obj_schema(
        ["key"], {"key": _STRING, "value": _TEXT_OR_NULL, "value_base64": nullable(_BASE64)}
    )
    header["allOf"] = [text_xor_base64("value")]
    return {
        "Header": header,
        "NewRecord": record,
        "ProduceRequest": obj_schema(
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
    partition_info = obj_schema(
        fields,
        {
            "partition": _INTEGER,
            **dict.fromkeys(fields[1:], _INTEGER_OR_NULL),
            "broker": {**_INTEGER, "description": "In a cluster: the broker serving it"},
        },
    )
    partition_info["description"] = (
        "Offsets and size are null for a partition served by another broker of the cluster"
    )
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
        "NewTopic": obj_schema(
            ["name"],
            {
                "name": ref("TopicName"),
                "partitions": {**nullable(partitions), "default": 1},
                "config": nullable(ref("TopicConfig")),
            },
        ),
        "TopicChange": obj_schema(
            [],
            {
                "partitions": {**nullable(partitions), "description": "Can only grow"},
                "config": nullable(ref("TopicConfig")),
            },
        ),
        "TopicList": obj_schema(
            ["topics"],
            {
                "topics": {
                    "type": "array",
                    "items": obj_schema(
                        ["name", "partitions", "internal"],
                        {"name": _STRING, "partitions": _INTEGER, "internal": {"type": "boolean"}},
                    ),
                }
            },
        ),
        "Topic": obj_schema(
            ["name", "partitions", "config"],
            {
                "name": _STRING,
                "partitions": {"type": "array", "items": partition_info},
                "config": obj_schema(list(CONFIG_BOUNDS), dict.fromkeys(CONFIG_BOUNDS, _INTEGER)),
                "topic_id": {**_TEXT_OR_NULL, "description": "In a cluster: the operator's id"},
            },
        ),
    }


def _results() -> dict[str, Any]:
    offset = obj_schema(["partition", "offset"], {"partition": _INTEGER, "offset": _INTEGER})
    record = obj_schema(
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
        "ProduceResult": obj_schema(
            ["offsets"],
            {"offsets": {"type": "array", "description": "One per record", "items": offset}},
        ),
        "BatchResult": obj_schema(
            ["partition", "base_offset", "last_offset"],
            {"partition": _INTEGER, "base_offset": _INTEGER, "last_offset": _INTEGER},
        ),
        "Record": record,
        "FetchResult": obj_schema(
            ["records", "next_offset", "high_watermark"],
            {
                "records": {"type": "array", "items": ref("Record")},
                "next_offset": _INTEGER,
                "high_watermark": _INTEGER,
            },
        ),
        "Offset": offset,
        "Status": obj_schema(["status"], {"status": _STRING}),
        "Error": obj_schema(
            ["error"],
            {
                "error": obj_schema(
                    ["code", "message"],
                    {
                        "code": {"type": "string", "description": "Stable, machine-readable"},
                        "message": _STRING,
                        "broker": {
                            **ref("Broker"),
                            "description": "not_leader, not_coordinator: the broker to ask",
                        },
                    },
                )
            },
        ),
    }


def _groups() -> dict[str, Any]:
    short = {"type": "string", "maxLength": 255}
    member_id = {"type": "string", "maxLength": 1024}
    generation = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    b64 = {"type": "string", "contentEncoding": "base64", "pattern": f"^{BASE64.pattern}$"}
    protocol = obj_schema(["name"], {"name": short, "metadata_base64": nullable(b64)})
    joined = obj_schema(
        ["member_id", "client_id", "metadata_base64"],
        {"member_id": _STRING, "client_id": _STRING, "metadata_base64": _STRING},
    )
    commit_entry = obj_schema(
        ["topic", "partition", "offset"],
        {
            "topic": {"type": "string", "maxLength": 249},
            "partition": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "offset": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
            "metadata": nullable({"type": "string", "maxLength": 4096}),
        },
    )
    reset_entry = {**commit_entry, "properties": {**commit_entry["properties"]}}
    del reset_entry["properties"]["metadata"]
    offsets_of = {"type": "array", "minItems": 1, "maxItems": MAX_OFFSETS_PER_REQUEST}
    nullable_int, nullable_str = {"type": ["integer", "null"]}, {"type": ["string", "null"]}
    member = obj_schema(
        [
            "member_id",
            "client_id",
            "client_host",
            "session_timeout_ms",
            "group_instance_id",
            "assignment",
        ],
        {
            "member_id": _STRING,
            "client_id": _STRING,
            "client_host": _STRING,
            "session_timeout_ms": _INTEGER,
            "group_instance_id": nullable_str,
            "assignment": {
                "type": ["array", "null"],
                "items": obj_schema(
                    ["topic", "partitions"],
                    {"topic": _STRING, "partitions": {"type": "array", "items": _INTEGER}},
                ),
            },
        },
    )
    lag_row = obj_schema(
        ["topic", "partition", "committed", "log_end_offset", "lag", "member_id"],
        {
            "topic": _STRING,
            "partition": _INTEGER,
            "committed": nullable_int,
            "log_end_offset": nullable_int,
            "lag": nullable_int,
            "member_id": nullable_str,
        },
    )
    summary = obj_schema(
        ["group", "state", "protocol_type", "members"],
        {"group": _STRING, "state": _STRING, "protocol_type": nullable_str, "members": _INTEGER},
    )
    return {
        "GroupId": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"},
        "JoinRequest": obj_schema(
            ["protocol_type", "protocols"],
            {
                "member_id": {
                    **nullable(member_id),
                    "description": "Empty or absent for a new member",
                },
                "client_id": nullable(short),
                "group_instance_id": {
                    **nullable({"type": "string", "minLength": 1, "maxLength": 249}),
                    "description": "Static membership (Kafka's group.instance.id): a member "
                    "that restarts with the same one takes its old place, no rebalance",
                },
                "session_timeout_ms": nullable(
                    {"type": "integer", "minimum": 1000, "maximum": 300_000, "default": 10_000}
                ),
                "rebalance_timeout_ms": nullable(
                    {"type": "integer", "minimum": 1, "maximum": 300_000}
                ),
                "protocol_type": {**short, "description": "consumer: Kafka's consumer protocol"},
                "protocols": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": protocol,
                    "description": "In order of preference; names distinct",
                },
            },
        ),
        "JoinResult": obj_schema(
            ["member_id", "generation", "protocol_type", "protocol", "leader", "members"],
            {
                "member_id": _STRING,
                "generation": _INTEGER,
                "protocol_type": _STRING,
                "protocol": _STRING,
                "leader": _STRING,
                "members": {"type": "array", "items": joined, "description": "Leader only"},
            },
        ),
        "SyncRequest": obj_schema(
            ["member_id", "generation"],
            {
                "member_id": member_id,
                "generation": generation,
                "assignments": nullable(
                    {
                        "type": "array",
                        "description": "From the leader: every member's assignment",
                        "items": obj_schema(
                            ["member_id", "assignment_base64"],
                            {"member_id": member_id, "assignment_base64": b64},
                        ),
                    }
                ),
            },
        ),
        "SyncResult": obj_schema(
            ["protocol_type", "protocol", "assignment_base64"],
            {"protocol_type": _STRING, "protocol": _STRING, "assignment_base64": _STRING},
        ),
        "MemberRef": obj_schema(
            ["member_id", "generation"], {"member_id": member_id, "generation": generation}
        ),
        "LeaveRequest": obj_schema(["member_id"], {"member_id": member_id}),
        "OffsetCommit": obj_schema(
            ["offsets"],
            {
                "member_id": {
                    **nullable(member_id),
                    "description": "Absent while the group is empty",
                },
                "generation": nullable({**generation, "minimum": -1}),
                "offsets": {**offsets_of, "items": commit_entry},
            },
        ),
        "CommittedOffsets": obj_schema(
            ["offsets"], {"offsets": {"type": "array", "items": commit_entry}}
        ),
        "OffsetReset": obj_schema(
            ["to"],
            {
                "to": {"enum": ["earliest", "latest", "timestamp", "offsets"]},
                "topics": nullable(
                    {"type": "array", "items": {"type": "string", "maxLength": 249}}
                ),
                "timestamp": nullable({"type": "integer", "minimum": 0, "maximum": INT64_MAX}),
                "offsets": nullable({**offsets_of, "items": reset_entry}),
                "dry_run": {"type": ["boolean", "null"], "default": False},
            },
        ),
        "OffsetResetResult": obj_schema(
            ["offsets", "dry_run"],
            {"offsets": {"type": "array", "items": reset_entry}, "dry_run": {"type": "boolean"}},
        ),
        "GroupList": obj_schema(
            ["groups"],
            {
                "groups": {"type": "array", "items": summary},
                "broker_id": {
                    "type": "integer",
                    "description": "In a cluster: this broker, which lists the groups it "
                    "coordinates (ask every broker for all of them)",
                },
            },
        ),
        "Group": obj_schema(
            [
                "group",
                "state",
                "protocol_type",
                "protocol",
                "generation",
                "leader",
                "members",
                "offsets",
                "lag",
            ],
            {
                "group": _STRING,
                "state": {
                    "enum": [
                        "Empty",
                        "PreparingRebalance",
                        "CompletingRebalance",
                        "Stable",
                        "Dead",
                    ]
                },
                "protocol_type": nullable_str,
                "protocol": nullable_str,
                "generation": _INTEGER,
                "leader": nullable_str,
                "members": {"type": "array", "items": member},
                "offsets": {"type": "array", "items": lag_row},
                "lag": {**nullable_int, "description": "Sum of the known per-partition lags"},
            },
        ),
    }


def schemas() -> dict[str, Any]:
    return {**_topics(), **_records_in(), **_results(), **_groups()}
