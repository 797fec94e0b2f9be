"""The OpenAPI 3.1 document of the broker's HTTP API, served at ``GET /v1/openapi.json``.

Written by hand next to the routes it describes; a test checks that every route the app serves
appears here and that the document is valid OpenAPI, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from millstream import __version__

_ERROR_REF = {"$ref": "#/components/responses/Error"}
_BATCHES = "application/vnd.kafka.record-batch"


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


_TOPIC = _param("topic", "path", "Topic name", {"$ref": "#/components/schemas/TopicName"})
_PARTITION = _param("partition", "path", "Partition number", {"type": "integer", "minimum": 0})
_ACKS = _param(
    "acks",
    "query",
    "all (default): answer once the records are fsynced; 1 or 0: once they are written",
    {"type": "string", "enum": ["all", "-1", "1", "0"], "default": "all"},
)


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _ok(description: str, schema_name: str) -> dict[str, Any]:
    return {"description": description, "content": _json(schema_name)}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERROR_REF for code in codes}


_SCHEMAS: dict[str, Any] = {
    "TopicName": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"},
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable, machine-readable"},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "TopicConfig": {
        "type": "object",
        "description": "Per-topic settings; values may be integers or integer strings",
        "properties": {
            name: {"type": ["integer", "string"]}
            for name in (
                "segment.bytes",
                "segment.ms",
                "retention.ms",
                "retention.bytes",
                "flush.ms",
                "max.message.bytes",
                "index.interval.bytes",
            )
        },
        "additionalProperties": False,
    },
    "NewTopic": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"$ref": "#/components/schemas/TopicName"},
            "partitions": {"type": "integer", "minimum": 1, "default": 1},
            "config": {"$ref": "#/components/schemas/TopicConfig"},
        },
    },
    "TopicChange": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "partitions": {"type": "integer", "minimum": 1, "description": "Can only grow"},
            "config": {"$ref": "#/components/schemas/TopicConfig"},
        },
    },
    "TopicList": {
        "type": "object",
        "properties": {
            "topics": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "partitions": {"type": "integer"}},
                },
            }
        },
    },
    "Topic": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "config": {"type": "object"},
            "partitions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "partition": {"type": "integer"},
                        "earliest_offset": {"type": "integer"},
                        "latest_offset": {"type": "integer"},
                        "size_bytes": {"type": "integer"},
                    },
                },
            },
        },
    },
    "Header": {
        "type": "object",
        "required": ["key"],
        "properties": {
            "key": {"type": "string"},
            "value": {"type": ["string", "null"]},
            "value_base64": {"type": "string", "contentEncoding": "base64"},
        },
    },
    "NewRecord": {
        "type": "object",
        "additionalProperties": False,
        "description": "Give value (a string, stored as UTF-8, or null) or value_base64",
        "properties": {
            "key": {"type": ["string", "null"]},
            "key_base64": {"type": "string", "contentEncoding": "base64"},
            "value": {"type": ["string", "null"]},
            "value_base64": {"type": "string", "contentEncoding": "base64"},
            "headers": {"type": "array", "items": {"$ref": "#/components/schemas/Header"}},
            "partition": {"type": "integer", "minimum": 0},
            "timestamp": {"type": "integer", "minimum": 0, "description": "Epoch ms"},
        },
    },
    "ProduceRequest": {
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/NewRecord"},
            }
        },
    },
    "ProduceResult": {
        "type": "object",
        "properties": {
            "offsets": {
                "type": "array",
                "description": "One per record, in request order",
                "items": {
                    "type": "object",
                    "properties": {
                        "partition": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
            }
        },
    },
    "BatchResult": {
        "type": "object",
        "properties": {
            "partition": {"type": "integer"},
            "base_offset": {"type": "integer"},
            "last_offset": {"type": "integer"},
        },
    },
    "Record": {
        "type": "object",
        "description": "key and value are strings when valid UTF-8, otherwise null with *_base64",
        "properties": {
            "offset": {"type": "integer"},
            "timestamp": {"type": "integer"},
            "key": {"type": ["string", "null"]},
            "key_base64": {"type": "string"},
            "value": {"type": ["string", "null"]},
            "value_base64": {"type": "string"},
            "headers": {"type": "array", "items": {"$ref": "#/components/schemas/Header"}},
        },
    },
    "FetchResult": {
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
            "next_offset": {"type": "integer"},
            "high_watermark": {"type": "integer"},
        },
    },
    "Offset": {
        "type": "object",
        "properties": {"partition": {"type": "integer"}, "offset": {"type": "integer"}},
    },
}

_FETCH_PARAMS = [
    _TOPIC,
    _PARTITION,
    _param("offset", "query", "First offset to read (default: earliest)", {"type": "integer"}),
    _param("max_records", "query", "At most this many records", {"type": "integer"}),
    _param("max_bytes", "query", "About this many bytes of batches", {"type": "integer"}),
    _param("wait_ms", "query", "Long-poll this long when nothing is new", {"type": "integer"}),
    _param("encoding", "query", "base64: always base64", {"enum": ["auto", "base64"]}),
]

_PATHS: dict[str, Any] = {
    "/v1/topics": {
        "get": {
            "summary": "List topics",
            "operationId": "listTopics",
            "responses": {"200": _ok("Topics", "TopicList")},
        },
        "post": {
            "summary": "Create a topic",
            "operationId": "createTopic",
            "requestBody": {"required": True, "content": _json("NewTopic")},
            "responses": {"201": _ok("Created", "Topic"), **_errors("400", "409")},
        },
    },
    "/v1/topics/{topic}": {
        "parameters": [_TOPIC],
        "get": {
            "summary": "Describe a topic: offsets and size per partition, config",
            "operationId": "describeTopic",
            "responses": {"200": _ok("Topic", "Topic"), **_errors("404")},
        },
        "patch": {
            "summary": "Grow partitions or change config",
            "operationId": "alterTopic",
            "requestBody": {"required": True, "content": _json("TopicChange")},
            "responses": {"200": _ok("Changed", "Topic"), **_errors("400", "404")},
        },
        "delete": {
            "summary": "Delete a topic and its data",
            "operationId": "deleteTopic",
            "responses": {"204": {"description": "Deleted"}, **_errors("404")},
        },
    },
    "/v1/topics/{topic}/records": {
        "parameters": [_TOPIC],
        "post": {
            "summary": "Produce JSON records (partitioned by key, else sticky)",
            "operationId": "produceRecords",
            "parameters": [_ACKS],
            "requestBody": {"required": True, "content": _json("ProduceRequest")},
            "responses": {"200": _ok("Offsets", "ProduceResult"), **_errors("400", "404", "413")},
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/batches": {
        "parameters": [_TOPIC, _PARTITION],
        "post": {
            "summary": "Produce raw RecordBatch v2 bytes (one or more batches): the fast path",
            "operationId": "produceBatches",
            "parameters": [_ACKS],
            "requestBody": {
                "required": True,
                "content": {_BATCHES: {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": _ok("Offsets assigned", "BatchResult"),
                **_errors("400", "404", "413", "415"),
            },
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/records": {
        "parameters": _FETCH_PARAMS,
        "get": {
            "summary": "Read records from an offset (JSON, raw batches, NDJSON or SSE stream)",
            "operationId": "fetchRecords",
            "responses": {
                "200": {
                    "description": "Records; the representation follows the Accept header",
                    "headers": {
                        "Millstream-Next-Offset": {"schema": {"type": "integer"}},
                        "Millstream-High-Watermark": {"schema": {"type": "integer"}},
                    },
                    "content": {
                        **_json("FetchResult"),
                        _BATCHES: {"schema": {"type": "string", "format": "binary"}},
                        "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/Record"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors("400", "404", "416"),
            },
        },
    },
    "/v1/topics/{topic}/partitions/{partition}/offsets": {
        "parameters": [
            _TOPIC,
            _PARTITION,
            _param("at", "query", "earliest, latest or epoch ms", {"type": "string"}),
        ],
        "get": {
            "summary": "Look up an offset by position or time",
            "operationId": "lookupOffset",
            "responses": {"200": _ok("Offset", "Offset"), **_errors("400", "404")},
        },
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI document"}},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "responses": {"200": {"description": "Prometheus text format"}},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "operationId": "healthz",
            "responses": {"200": {"description": "The process is serving"}},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness",
            "operationId": "readyz",
            "responses": {
                "200": {"description": "Logs recovered; serving"},
                "503": {"description": "Starting or stopping"},
            },
        }
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Millstream broker", "version": __version__},
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "responses": {
                "Error": {
                    "description": "A refused request: nothing of it was applied",
                    "content": _json("Error"),
                }
            },
        },
    }
