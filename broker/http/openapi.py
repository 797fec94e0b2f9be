"""The OpenAPI 3.1 document of the broker's HTTP API, served at ``GET /v1/openapi.json``.

Written by hand next to the routes it describes (bodies in :mod:`.schemas`; the admin routes
and the cluster view, paths and bodies, in :mod:`.openapi_admin`). Unit tests check
that every route the app serves appears here and that the document is valid OpenAPI; an
integration test fuzzes a real broker from it (schemathesis) and holds every answer to it:
statuses, content types and bodies.
"""

from __future__ import annotations

from typing import Any

from millstream import __version__
from millstream.broker.http.fetch import MAX_FETCH_RECORDS
from millstream.broker.http.openapi_admin import ADMIN_PATHS, admin_schemas
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
from millstream.broker.http.schemas import ref, schemas

_ACKS = param(
    "acks",
    "query",
    "all (default): answer once the records are fsynced; 1 or 0: once they are written",
    {"type": "string", "enum": ["all", "-1", "1", "0"], "default": "all"},
)


# 413: body over the broker's request limit; 503: the disk failed, the broker is stopping, or
# (in a cluster) the partition is moving onto this broker and not served yet: partition_moving.
_WRITE_ERRORS = ("400", "413", "503")
# In a cluster: the partition or group belongs to another broker, which the error names.
_MISDIRECTED = "421"

_FETCH_PARAMS = [
    TOPIC,
    PARTITION,
    param("offset", "query", "First offset to read (default: earliest)", int_schema(0, INT64_MAX)),
    param(
        "max_records",
        "query",
        "At most this many records (JSON: default 500; a stream without it follows for good)",
        int_schema(1, MAX_FETCH_RECORDS),
    ),
    *FETCH_LIMITS,
    param(
        "encoding",
        "query",
        "base64: binary fields always as *_base64",
        {"type": "string", "enum": ["auto", "base64"], "default": "auto"},
    ),
    param(
        "follow",
        "query",
        "With raw batches: one response that follows the log as it grows (NDJSON and SSE "
        "always follow)",
        {"type": "string", "enum": ["true", "false"], "default": "false"},
    ),
]

_AT = param(
    "at",
    "query",
    "earliest, latest (default) or a time in epoch ms: the first offset at or after it",
    {"anyOf": [{"enum": ["earliest", "latest"]}, int_schema(0, INT64_MAX)], "default": "latest"},
)

_FETCHED = {
    "description": "Records, as the Accept header asks (NDJSON: one Record a line)",
    "headers": {
        "Millstream-Next-Offset": {
            "description": "Raw batches only: the offset to fetch next",
            "schema": {"type": "integer"},
        },
        "Millstream-High-Watermark": {
            "description": "Raw batches only: the partition's next offset to be written",
            "schema": {"type": "integer"},
        },
    },
    "content": {
        **json_content("FetchResult"),
        BATCHES: BINARY,
        "application/x-ndjson": {"schema": ref("Record")},  # the schema of each line
        "text/event-stream": {"schema": {"type": "string"}},
    },
}

_TOPIC_PATHS: dict[str, Any] = {
    "/v1/topics": {
        "get": {
            "summary": "List topics",
            "operationId": "listTopics",
            "parameters": [
                param(
                    "internal",
                    "query",
                    "true: include the broker's internal topics (names beginning with __)",
                    {"type": "string", "enum": ["true", "false"], "default": "false"},
                )
            ],
            "responses": {"200": ok("Topics", "TopicList"), **error_responses("400")},
        },
        "post": {
            "summary": "Create a topic",
            "operationId": "createTopic",
            "requestBody": {"required": True, "content": json_content("NewTopic")},
            "description": "409 managed_by_operator in an operator-managed cluster",
            "responses": {"201": ok("Created", "Topic"), **error_responses(*_WRITE_ERRORS, "409")},
        },
    },
    "/v1/topics/{topic}": {
        "parameters": [TOPIC],
        "get": {
            "summary": "Describe a topic: offsets and size per partition, config",
            "operationId": "describeTopic",
            "description": "In a cluster: every partition with its broker; offsets and sizes "
            "of the partitions served elsewhere are null",
            "responses": {"200": ok("Topic", "Topic"), **error_responses("404")},
        },
        "patch": {
            "summary": "Grow partitions or change config",
            "operationId": "alterTopic",
            "description": "409 managed_by_operator in an operator-managed cluster",
            "requestBody": {"required": True, "content": json_content("TopicChange")},
            "responses": {
                "200": ok("Changed", "Topic"),
                **error_responses(*_WRITE_ERRORS, "404", "409"),
            },
        },
        "delete": {
            "summary": "Delete a topic and its data",
            "operationId": "deleteTopic",
            "description": "409 managed_by_operator in an operator-managed cluster",
            "responses": {
                "204": {"description": "Deleted"},
                **error_responses("404", "409", "503"),
            },
        },
    },
}

_RECORD_PATHS: dict[str, Any] = {
    "/v1/topics/{topic}/records": {
        "parameters": [TOPIC],
        "post": {
            "summary": "Produce JSON records (partitioned by key, else sticky)",
            "operationId": "produceRecords",
            "parameters": [_ACKS],
            "requestBody": {"required": True, "content": json_content("ProduceRequest")},
            "responses": {
                "200": ok("Offsets, one per record in request order", "ProduceResult"),
                **error_responses(*_WRITE_ERRORS, "404", _MISDIRECTED),
            },
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/batches": {
        "parameters": [TOPIC, PARTITION],
        "post": {
            "summary": "Produce raw RecordBatch v2 bytes (one or more batches): the fast path",
            "operationId": "produceBatches",
            "parameters": [_ACKS],
            "requestBody": {
                "required": True,
                "content": {BATCHES: BINARY, "application/octet-stream": BINARY},
            },
            "responses": {
                "200": ok("Offsets assigned", "BatchResult"),
                **error_responses(*_WRITE_ERRORS, "404", "415", _MISDIRECTED),
            },
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/records": {
        "parameters": _FETCH_PARAMS,
        "get": {
            "summary": "Read records from an offset (JSON, raw batches, NDJSON or SSE stream)",
            "operationId": "fetchRecords",
            "responses": {
                "200": _FETCHED,
                **error_responses("400", "404", "416", _MISDIRECTED, "503"),
            },
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/offsets": {
        "parameters": [TOPIC, PARTITION, _AT],
        "get": {
            "summary": "Look up an offset by position or time",
            "operationId": "lookupOffset",
            "responses": {
                "200": ok("Offset", "Offset"),
                **error_responses("400", "404", _MISDIRECTED, "503"),
            },
        },
    },
}


_GROUP = param("group", "path", "Group id", ref("GroupId"))
_CONFLICT = "409"  # the member must rejoin: unknown_member, illegal_generation, ...
# Every group route: 503 coordinator_not_available (in a cluster, the group's offsets partition
# is not placed yet or is being moved or loaded here), or the disk failed.
_UNAVAILABLE = "503"


def _group_call(
    operation_id: str, summary: str, body: str, ok: dict[str, Any], *errors: str
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "requestBody": {"required": True, "content": json_content(body)},
            "responses": {**ok, **error_responses("400", *errors, _MISDIRECTED, _UNAVAILABLE)},
        }
    }


_NO_CONTENT = {"204": {"description": "Done"}}

_GROUP_PATHS: dict[str, Any] = {
    "/v1/groups": {
        "get": {
            "summary": "List consumer groups",
            "operationId": "listGroups",
            "responses": {"200": ok("Groups", "GroupList")},
        }
    },
    "/v1/groups/{group}": {
        "parameters": [_GROUP],
        "get": {
            "summary": "Describe a group: state, members, assignment, offsets and lag",
            "operationId": "describeGroup",
            "responses": {
                "200": ok("The group", "Group"),
                **error_responses("400", "404", _MISDIRECTED, _UNAVAILABLE),
            },
        },
        "delete": {
            "summary": "Delete a group without live members, and its offsets",
            "operationId": "deleteGroup",
            "responses": {
                **_NO_CONTENT,
                **error_responses("400", "404", _CONFLICT, _MISDIRECTED, _UNAVAILABLE),
            },
        },
    },
    "/v1/groups/{group}/join": {
        "parameters": [_GROUP],
        **_group_call(
            "joinGroup",
            "Join, or rejoin for a rebalance; answers when the rebalance completes",
            "JoinRequest",
            {"200": ok("Joined a generation", "JoinResult")},
            _CONFLICT,
        ),
    },
    "/v1/groups/{group}/sync": {
        "parameters": [_GROUP],
        **_group_call(
            "syncGroup",
            "Get this member's assignment (the leader brings everyone's)",
            "SyncRequest",
            {"200": ok("This member's assignment", "SyncResult")},
            _CONFLICT,
        ),
    },
    "/v1/groups/{group}/heartbeat": {
        "parameters": [_GROUP],
        **_group_call(
            "heartbeat",
            "Keep the session alive; 409 rebalance_in_progress says: rejoin",
            "MemberRef",
            _NO_CONTENT,
            _CONFLICT,
        ),
    },
    "/v1/groups/{group}/leave": {
        "parameters": [_GROUP],
        **_group_call("leaveGroup", "Leave the group", "LeaveRequest", _NO_CONTENT, _CONFLICT),
    },
    "/v1/groups/{group}/offsets": {
        "parameters": [_GROUP],
        "get": {
            "summary": "Committed offsets",
            "operationId": "fetchOffsets",
            "parameters": [
                param(
                    "topic",
                    "query",
                    "Only these topics (repeatable)",
                    {"type": "array", "items": {"type": "string"}},
                    style="form",
                    explode=True,
                )
            ],
            "responses": {
                "200": ok("Offsets", "CommittedOffsets"),
                **error_responses("400", _MISDIRECTED, _UNAVAILABLE),
            },
        },
        **_group_call(
            "commitOffsets",
            "Commit offsets (fenced by member and generation); answers once durable",
            "OffsetCommit",
            _NO_CONTENT,
            "404",
            _CONFLICT,
        ),
    },
    "/v1/groups/{group}/offsets/reset": {
        "parameters": [_GROUP],
        **_group_call(
            "resetOffsets",
            "Reset a group's offsets (refused while it has live members)",
            "OffsetReset",
            {"200": ok("The offsets, reset or (dry run) planned", "OffsetResetResult")},
            "404",
            _CONFLICT,
        ),
    },
}


def _service(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "operationId": operation_id, "responses": responses}}


_SERVICE_PATHS: dict[str, Any] = {
    "/v1/openapi.json": _service(
        "openapi",
        "This document",
        {"200": {"description": "OpenAPI document", "content": {"application/json": {}}}},
    ),
    "/metrics": _service(
        "metrics",
        "Prometheus metrics",
        {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    ),
    "/healthz": _service("healthz", "Liveness", {"200": ok("The process is serving", "Status")}),
    "/readyz": _service(
        "readyz",
        "Readiness",
        {
            "200": ok("Logs recovered; serving", "Status"),
            "503": ok("Starting or stopping", "Status"),
        },
    ),
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Millstream broker", "version": __version__},
        "paths": {
            **_TOPIC_PATHS,
            **_RECORD_PATHS,
            **_GROUP_PATHS,
            **ADMIN_PATHS,
            **_SERVICE_PATHS,
        },
        "components": {
            "schemas": {**schemas(), **admin_schemas()},
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator's admin token (--admin-token-file)",
                }
            },
            "responses": {
                "Error": {
                    "description": "A refused request: nothing of it was applied",
                    "content": json_content("Error"),
                }
            },
        },
    }
