"""The OpenAPI document's admin part: the operator's routes and the public cluster view.

Paths and bodies of :mod:`~millstream.broker.http.admin` (cluster metadata pushes),
:mod:`~millstream.broker.http.moves` (moves onto a broker) and
:mod:`~millstream.broker.http.replicas` (what a broker holds, read, fenced and released by a
move's receiver), merged into the document by :mod:`~millstream.broker.http.openapi`. Every
admin operation needs the bearer token (``adminToken``): 401 without it, 403 with another.
"""

from __future__ import annotations

from typing import Any

from millstream.broker.http.admin import (
    MAX_BROKER_ID,
    MAX_BROKERS,
    MAX_TOPIC_ID_LENGTH,
    MAX_URL_LENGTH,
)
from millstream.broker.http.openapi_parts import (
    BATCHES,
    BINARY,
    FETCH_LIMITS,
    PARTITION,
    TOPIC,
    error_responses,
    int_schema,
    json_content,
    ok,
    param,
)
from millstream.broker.http.params import INT64_MAX
from millstream.broker.http.schemas import (
    INTEGER,
    STRING,
    TEXT_OR_NULL,
    nullable,
    obj_schema,
    ref,
)
from millstream.broker.storage.log_manager import MAX_PARTITIONS

# 401: no token; 403: the wrong token, or a broker started without one.
_AUTH_ERRORS = ("401", "403")
_ADMIN_ERRORS = ("400", *_AUTH_ERRORS)
_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}]
_NO_CONTENT = {"204": {"description": "Done"}}


def _admin(operation_id: str, summary: str, **operation: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["admin"],
        "security": _ADMIN_SECURITY,
        **operation,
    }


_CLUSTER_PATHS: dict[str, Any] = {
    "/v1/cluster": {
        "get": {
            "summary": "The cluster's brokers, this broker's id and every topic's placement",
            "operationId": "describeCluster",
            "description": "What clients route by; mode standalone on a broker outside a cluster",
            "responses": {"200": ok("Cluster metadata", "Cluster")},
        }
    },
    "/v1/admin/cluster": {
        "put": _admin(
            "putCluster",
            "Set the cluster's brokers (the operator's push)",
            description="Refused with 409 stale_epoch if the epoch is older than the broker's",
            requestBody={"required": True, "content": json_content("ClusterPush")},
            responses={
                "200": ok("The cluster metadata now", "Cluster"),
                **error_responses(*_ADMIN_ERRORS, "409", "503"),
            },
        ),
        "delete": _admin(
            "leaveCluster",
            "Leave the cluster: delete the pushed topics held here and forget the metadata",
            description="For a drained broker about to be removed; refused with 409 "
            "move_conflict while it serves, receives or keeps a retired copy of a partition",
            responses={"204": {"description": "Left"}, **error_responses(*_ADMIN_ERRORS, "409")},
        ),
    },
    "/v1/admin/topics/{topic}": {
        "parameters": [TOPIC],
        "put": _admin(
            "putTopicPlacement",
            "Create or alter a topic and place its partitions (the operator's push)",
            description="This broker hosts the partitions placed on it; partitions only grow. "
            "A partition placed elsewhere now is retired here (kept read-only until released); "
            "a moving partition placed here switches (the push must carry an epoch)",
            requestBody={"required": True, "content": json_content("TopicPush")},
            responses={
                "200": ok("The topic as this broker serves it", "Topic"),
                **error_responses(*_ADMIN_ERRORS, "409", "413", "503"),
            },
        ),
        "delete": _admin(
            "deleteTopicPlacement",
            "Delete a topic and what this broker holds of it (the operator's push)",
            responses={
                "204": {"description": "Deleted"},
                **error_responses(*_ADMIN_ERRORS, "404", "503"),
            },
        ),
    },
}

_MOVE_PARAMS = [TOPIC, PARTITION]

_MOVE_PATHS: dict[str, Any] = {
    "/v1/admin/moves": {
        "get": _admin(
            "listMoves",
            "The moves onto this broker, with their progress",
            responses={"200": ok("Moves", "MoveList"), **error_responses(*_AUTH_ERRORS)},
        ),
        "post": _admin(
            "startMove",
            "Start copying a partition onto this broker from the broker serving it",
            description="201 for a new move; 200 for the one already running (its throttle "
            "set to the one given). 409 move_conflict: the partition is served here, served "
            "by another broker than source, or still retired here",
            requestBody={"required": True, "content": json_content("MoveStart")},
            responses={
                "200": ok("The move, already running", "Move"),
                "201": ok("The move, started", "Move"),
                **error_responses(*_ADMIN_ERRORS, "404", "409", "413", "503"),
            },
        ),
    },
    "/v1/admin/moves/{topic}/{partition}": {
        "parameters": _MOVE_PARAMS,
        "get": _admin(
            "describeMove",
            "A move's state and progress",
            responses={"200": ok("The move", "Move"), **error_responses(*_AUTH_ERRORS, "404")},
        ),
        "patch": _admin(
            "throttleMove",
            "Change a move's copy throttle",
            requestBody={"required": True, "content": json_content("MoveChange")},
            responses={
                "200": ok("The move", "Move"),
                **error_responses(*_ADMIN_ERRORS, "404", "413", "503"),
            },
        ),
        "delete": _admin(
            "cancelMove",
            "Cancel a move (its copy is deleted) or forget a completed one",
            description="409 move_conflict once it is switching: push the partition back to "
            "its source instead",
            responses={
                **_NO_CONTENT,
                **error_responses(*_AUTH_ERRORS, "404", "409", "503"),
            },
        ),
    },
}

_COPY_PARAMS = [
    TOPIC,
    PARTITION,
    param("offset", "query", "First offset to read (default: log start)", int_schema(0, INT64_MAX)),
    *FETCH_LIMITS,
]


def _offset_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": INTEGER}


_PARTITION_PATHS: dict[str, Any] = {
    "/v1/admin/partitions": {
        "get": _admin(
            "listHeldPartitions",
            "Every partition with a log here: serving, receiving (a move) or retired",
            responses={
                "200": ok("Partitions", "HeldPartitions"),
                **error_responses(*_AUTH_ERRORS),
            },
        ),
    },
    "/v1/admin/partitions/{topic}/{partition}": {
        "parameters": _MOVE_PARAMS,
        "delete": _admin(
            "releasePartition",
            "Drop the retired copy of a partition that moved away",
            description="409 move_conflict if the partition is served here",
            responses={
                **_NO_CONTENT,
                **error_responses(*_AUTH_ERRORS, "404", "409", "503"),
            },
        ),
    },
    "/v1/admin/partitions/{topic}/{partition}/records": {
        "parameters": _COPY_PARAMS,
        "get": _admin(
            "readCopy",
            "Raw batches of a served or retired partition, offsets as stored (to copy it)",
            responses={
                "200": {
                    "description": "Whole RecordBatch v2 batches",
                    "headers": {
                        "Millstream-Log-Start-Offset": _offset_header("The log's first offset"),
                        "Millstream-High-Watermark": _offset_header("The end of what is readable"),
                        "Millstream-Next-Offset": _offset_header("The offset to read next"),
                    },
                    "content": {BATCHES: BINARY},
                },
                **error_responses(*_ADMIN_ERRORS, "404", "416", "503"),
            },
        ),
    },
    "/v1/admin/partitions/{topic}/{partition}/fence": {
        "parameters": _MOVE_PARAMS,
        "post": _admin(
            "fencePartition",
            "Stop taking writes for a partition that moves to broker owner; its final end",
            description="Called by a move's receiver when a push switches the move: the "
            "partition is placed on owner at the topic epoch given and retired here. "
            "Idempotent; 409 stale_epoch for an epoch older than the topic's",
            requestBody={"required": True, "content": json_content("FenceRequest")},
            responses={
                "200": ok("Fenced: the log ends here for good", "Fenced"),
                **error_responses(*_ADMIN_ERRORS, "404", "409", "413", "503"),
            },
        ),
    },
}

ADMIN_PATHS: dict[str, Any] = {**_CLUSTER_PATHS, **_MOVE_PATHS, **_PARTITION_PATHS}


def admin_schemas() -> dict[str, Any]:
    return {**_cluster_schemas(), **_move_schemas()}


def _cluster_schemas() -> dict[str, Any]:
    broker_id = {"type": "integer", "minimum": 0, "maximum": MAX_BROKER_ID}
    url = {"type": "string", "maxLength": MAX_URL_LENGTH, "pattern": "^https?://[^/]"}
    broker = obj_schema(["id", "url"], {"id": broker_id, "url": url})
    placement = {
        "type": "object",
        "description": "The broker id serving each partition, by partition number",
        "propertyNames": {"pattern": "^(0|[1-9][0-9]*)$"},
        "additionalProperties": broker_id,
    }
    epoch = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
    placed = obj_schema(
        ["name", "partitions", "topic_id", "placement", "epoch"],
        {
            "name": STRING,
            "partitions": INTEGER,
            "topic_id": TEXT_OR_NULL,
            "placement": placement,
            "epoch": nullable({**epoch, "description": "Null until a push or a move sets one"}),
        },
    )
    return {
        "Broker": broker,
        "Cluster": obj_schema(
            ["mode", "broker_id", "epoch", "brokers", "topics"],
            {
                "mode": {"enum": ["standalone", "cluster"]},
                "broker_id": {"type": ["integer", "null"]},
                "epoch": {"type": ["integer", "null"]},
                "brokers": {"type": "array", "items": ref("Broker")},
                "topics": {"type": "array", "items": placed},
            },
        ),
        "ClusterPush": obj_schema(
            ["epoch", "brokers"],
            {
                "epoch": {**epoch, "description": "Refused if older than the broker's"},
                "brokers": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BROKERS,
                    "items": ref("Broker"),
                    "description": "Every broker of the cluster; ids distinct",
                },
            },
        ),
        "TopicPush": obj_schema(
            ["partitions", "placement"],
            {
                "partitions": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PARTITIONS,
                    "description": "Can only grow",
                },
                "config": {
                    **nullable(ref("TopicConfig")),
                    "description": "Every override: a setting left out is the broker default",
                },
                "placement": {
                    **placement,
                    "description": "Every partition, 0 to partitions-1, to a broker of the cluster",
                },
                "topic_id": nullable({"type": "string", "maxLength": MAX_TOPIC_ID_LENGTH}),
                "epoch": nullable({**epoch, "description": "Refused if older than the topic's"}),
            },
        ),
    }


def _move_schemas() -> dict[str, Any]:
    int_or_null = {"type": ["integer", "null"]}
    broker_id = {"type": "integer", "minimum": 0, "maximum": MAX_BROKER_ID}
    throttle = nullable(
        {"type": "integer", "minimum": 1, "maximum": INT64_MAX, "description": "Bytes per second"}
    )
    move = obj_schema(
        [
            "topic",
            "partition",
            "source",
            "state",
            "throttle_bytes_per_s",
            "epoch",
            "final_offset",
            "log_start_offset",
            "log_end_offset",
            "size_bytes",
            "source_log_start_offset",
            "source_log_end_offset",
            "lag",
            "bytes_copied",
            "restarts",
            "retries",
            "error",
            "created_ms",
            "completed_ms",
            "source_released",
        ],
        {
            "topic": STRING,
            "partition": INTEGER,
            "source": obj_schema(["id", "url"], {"id": INTEGER, "url": TEXT_OR_NULL}),
            "state": {"enum": ["copying", "in_sync", "switching", "completed", "failed"]},
            "throttle_bytes_per_s": int_or_null,
            "epoch": {**int_or_null, "description": "The topic epoch that switched it"},
            "final_offset": {**int_or_null, "description": "The source's log end once fenced"},
            "log_start_offset": {**int_or_null, "description": "Of the copy here"},
            "log_end_offset": {**int_or_null, "description": "Of the copy here"},
            "size_bytes": int_or_null,
            "source_log_start_offset": int_or_null,
            "source_log_end_offset": {
                **int_or_null,
                "description": "The source's high watermark at the last fetch",
            },
            "lag": {**int_or_null, "description": "Offsets the copy is behind the source"},
            "bytes_copied": {**INTEGER, "description": "Since the broker started"},
            "restarts": {**INTEGER, "description": "Times the copy started over"},
            "retries": INTEGER,
            "error": TEXT_OR_NULL,
            "created_ms": INTEGER,
            "completed_ms": int_or_null,
            "source_released": {"type": "boolean"},
        },
    )
    held = obj_schema(
        ["topic", "partition", "role", "log_start_offset", "log_end_offset", "size_bytes"],
        {
            "topic": STRING,
            "partition": INTEGER,
            "role": {"enum": ["serving", "receiving", "retired"]},
            "log_start_offset": INTEGER,
            "log_end_offset": INTEGER,
            "size_bytes": INTEGER,
        },
    )
    return {
        "Move": move,
        "MoveList": obj_schema(
            ["broker_id", "moves"],
            {"broker_id": int_or_null, "moves": {"type": "array", "items": ref("Move")}},
        ),
        "MoveStart": obj_schema(
            ["topic", "partition"],
            {
                "topic": ref("TopicName"),
                "partition": {"type": "integer", "minimum": 0, "maximum": MAX_PARTITIONS - 1},
                "source": {
                    **nullable(broker_id),
                    "description": "The broker expected to serve it now (checked)",
                },
                "throttle_bytes_per_s": {**throttle, "description": "null: unthrottled"},
            },
        ),
        "MoveChange": obj_schema(
            ["throttle_bytes_per_s"],
            {"throttle_bytes_per_s": {**throttle, "description": "null: unthrottled"}},
        ),
        "HeldPartitions": obj_schema(
            ["broker_id", "partitions"],
            {"broker_id": int_or_null, "partitions": {"type": "array", "items": held}},
        ),
        "FenceRequest": obj_schema(
            ["epoch", "owner"],
            {
                "epoch": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
                "owner": {**broker_id, "description": "The broker taking the partition over"},
            },
        ),
        "Fenced": obj_schema(
            ["topic", "partition", "owner", "epoch", "log_end_offset"],
            {
                "topic": STRING,
                "partition": INTEGER,
                "owner": INTEGER,
                "epoch": INTEGER,
                "log_end_offset": {**INTEGER, "description": "Final: copy up to here"},
            },
        ),
    }
