"""Topic administration routes: create, list, describe, alter, delete.

In a standalone broker these routes are the source of truth for topics.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from millstream import errors
from millstream.broker.http.keys import LOGS
from millstream.broker.http.params import json_body
from millstream.broker.storage.log_manager import LogManager

routes = web.RouteTableDef()


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


@routes.post("/v1/topics")
async def create_topic(request: web.Request) -> web.Response:
    body = _object_body(await json_body(request), {"name", "partitions", "config"})
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.InvalidTopicName('"name" must be a string')
    logs = request.app[LOGS]
    logs.create_topic(name, body.get("partitions", 1), body.get("config") or {})
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
    logs.alter_topic(name, partitions=body.get("partitions"), config=body.get("config"))
    return web.json_response(describe(logs, name))


@routes.delete("/v1/topics/{topic}")
async def delete_topic(request: web.Request) -> web.Response:
    request.app[LOGS].delete_topic(request.match_info["topic"])
    return web.Response(status=204)
