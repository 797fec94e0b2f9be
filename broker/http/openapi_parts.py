"""Building blocks of the OpenAPI document, shared by its modules.

Used by :mod:`~millstream.broker.http.openapi` (the public API) and
:mod:`~millstream.broker.http.openapi_admin` (the admin routes and the cluster view).
"""

from __future__ import annotations

from typing import Any, Final

from millstream.broker.http.fetch import MAX_FETCH_BYTES
from millstream.broker.http.keys import HttpSettings
from millstream.broker.http.schemas import ref

ERROR_REF: Final = {"$ref": "#/components/responses/Error"}
BATCHES: Final = "application/vnd.kafka.record-batch"
BINARY: Final = {"schema": {"type": "string", "format": "binary"}}


def param(
    name: str, where: str, description: str, schema: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
        **extra,
    }


def int_schema(minimum: int, maximum: int, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def json_content(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(schema_name)}}


def ok(description: str, schema_name: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema_name)}


def error_responses(*codes: str) -> dict[str, Any]:
    return dict.fromkeys(codes, ERROR_REF)


TOPIC: Final = param("topic", "path", "Topic name", ref("TopicName"))
PARTITION: Final = param("partition", "path", "Partition number", {"type": "integer", "minimum": 0})


# How much a fetch returns and how long it waits: the same on the public and the admin reads.
FETCH_LIMITS = [
    param(
        "max_bytes",
        "query",
        "About this many bytes of batches (at least one batch is returned)",
        int_schema(1, MAX_FETCH_BYTES),
    ),
    param(
        "wait_ms",
        "query",
        "Long-poll this long when nothing is new",
        int_schema(0, HttpSettings().max_wait_ms, default=0),
    ),
]
