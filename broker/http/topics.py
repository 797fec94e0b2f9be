"""Topic administration routes: create, list, describe, alter, delete.

In a standalone broker these routes are the source of truth for topics.
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from millstream import errors
from millstream.broker.http.keys import LOGS, METRICS
from millstream.broker.http.params import json_body
from millstream.broker.storage.log_manager import LogManager

routes = web.RouteTableDef()

# Config values travel as integers or, as Kafka tools send them, decimal strings. The edge
# takes ASCII digits only: storage's int() would also take "1_000" or other scripts' digits.
_CONFIG_STRING: Final = re.compile(r"-?[0-9]+")


def describe(logs: LogManager, name: str) -> dict[str, Any]:
    info = logs.topic(name)
    partitions = []
    for p in range(info.partitions):
        log = logs.log(name, p)
        partitions.append(
            {
                "partition": p,
                "earliest_offset": log.log_start_offset,
                "latest_offset": log.high_watermark,
                "size_bytes": log.size_bytes,
            }
        )
    return {"name": name, "partitions": partitions, "config": info.config.to_mapping()}


def _object_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.InvalidRequest("body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise errors.InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    return body


def _config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The "config" object of a body, None if absent or null; its values checked for type."""
    config = body.get("config")
    if config is None:
        return None
    # Refused outright, so that a falsy non-object ([], 0, "") cannot pass as "no config".
    if not isinstance(config, dict):
        raise errors.InvalidConfig('"config" must be an object of setting names to values')
    for name, value in config.items():
        if isinstance(value, str) and not _CONFIG_STRING.fullmatch(value):
            raise errors.InvalidConfig(
                f"config {name!r} must be an integer or a string of decimal digits, got {value!r}"
            )
    return config


@routes.post("/v1/topics")
async def create_topic(request: web.Request) -> web.Response:
    body = _object_body(await json_body(request), {"name", "partitions", "config"})
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.InvalidTopicName('"name" must be a string')
    partitions = body.get("partitions")
    logs = request.app[LOGS]
    logs.create_topic(name, 1 if partitions is None else partitions, _config(body) or {})
    return web.json_response(describe(logs, name), status=201)


@routes.get("/v1/topics")
async def list_topics(request: web.Request) -> web.Response:
    logs = request.app[LOGS]
    topics = [{"name": n, "partitions": logs.topic(n).partitions} for n in logs.topic_names()]
    return web.json_response({"topics": topics})


@routes.get("/v1/topics/{topic}")
async def get_topic(request: web.Request) -> web.Response:
    return web.json_response(describe(request.app[LOGS], request.match_info["topic"]))


@routes.patch("/v1/topics/{topic}")
async def alter_topic(request: web.Request) -> web.Response:
    body = _object_body(await json_body(request), {"partitions", "config"})
    name = request.match_info["topic"]
    logs = request.app[LOGS]
    logs.alter_topic(name, partitions=body.get("partitions"), config=_config(body))
    return web.json_response(describe(logs, name))


@routes.delete("/v1/topics/{topic}")
async def delete_topic(request: web.Request) -> web.Response:
    name = request.match_info["topic"]
    request.app[LOGS].delete_topic(name)
    request.app[METRICS].forget_topic(name)
    return web.Response(status=204)
