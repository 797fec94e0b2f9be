"""Topic administration routes: create, list, describe, alter, delete.

In a standalone broker these routes are the source of truth for topics. In an operator-managed
cluster the Topic resources are: create, alter and delete are refused with
``managed_by_operator`` (the operator pushes topics through ``/v1/admin/topics``), and a
description covers the whole topic, each partition with its broker, offsets and sizes given for
the partitions served here (null for the others: their brokers have them).

Topics whose names begin with ``__`` are the broker's own (:mod:`millstream.internal_topics`):
clients may read them but not create, alter, delete or produce to them, and a listing leaves
them out unless asked (``?internal=true``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from millstream import errors
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.http.keys import CLUSTER, GROUPS, LOGS, METRICS
from millstream.broker.http.params import (
    check_user_topic,
    flag_param,
    json_body,
    object_body,
    topic_config,
)
from millstream.broker.storage.log_manager import LogManager
from millstream.internal_topics import is_internal

routes = web.RouteTableDef()

_MANAGED = (
    "this broker belongs to an operator-managed cluster, where topics are Topic resources: "
    "{} the topic with kubectl (a Topic resource), not over the broker's API"
)


def describe(logs: LogManager, name: str, cluster: ClusterNode | None = None) -> dict[str, Any]:
    info = logs.topic(name)
    metadata = None if cluster is None else cluster.metadata
    placed = None if metadata is None else metadata.topics.get(name)
    partitions: list[dict[str, Any]] = []
    for p in range(info.partitions):
        row: dict[str, Any] = {"partition": p}
        if placed is not None:
            row["broker"] = placed.placement[p]
        if info.hosts(p):
            log = logs.log(name, p)
            row.update(
                earliest_offset=log.log_start_offset,
                latest_offset=log.high_watermark,
                size_bytes=log.size_bytes,
            )
        else:
            row.update(earliest_offset=None, latest_offset=None, size_bytes=None)
        partitions.append(row)
    described: dict[str, Any] = {
        "name": name,
        "partitions": partitions,
        "config": info.config.to_mapping(),
    }
    if placed is not None:
        described["topic_id"] = placed.topic_id
    return described


def refuse_if_managed(request: web.Request, verb: str) -> None:
    if request.app[CLUSTER].managed:
        raise errors.ManagedByOperator(_MANAGED.format(verb))


@routes.post("/v1/topics")
async def create_topic(request: web.Request) -> web.Response:
    refuse_if_managed(request, "create")
    body = object_body(await json_body(request), {"name", "partitions", "config"})
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.InvalidTopicName('"name" must be a string')
    check_user_topic(name, "create")
    partitions = body.get("partitions")
    logs = request.app[LOGS]
    logs.create_topic(name, 1 if partitions is None else partitions, topic_config(body) or {})
    return web.json_response(describe(logs, name), status=201)


@routes.get("/v1/topics")
async def list_topics(request: web.Request) -> web.Response:
    logs = request.app[LOGS]
    internal = flag_param(request, "internal")
    topics = [
        {"name": n, "partitions": logs.topic(n).partitions, "internal": is_internal(n)}
        for n in logs.topic_names()
        if internal or not is_internal(n)
    ]
    return web.json_response({"topics": topics})


@routes.get("/v1/topics/{topic}")
async def get_topic(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(describe(app[LOGS], request.match_info["topic"], app[CLUSTER]))


@routes.patch("/v1/topics/{topic}")
async def alter_topic(request: web.Request) -> web.Response:
    refuse_if_managed(request, "alter")
    body = object_body(await json_body(request), {"partitions", "config"})
    name = request.match_info["topic"]
    check_user_topic(name, "alter")
    logs = request.app[LOGS]
    logs.alter_topic(name, partitions=body.get("partitions"), config=topic_config(body))
    return web.json_response(describe(logs, name))


@routes.delete("/v1/topics/{topic}")
async def delete_topic(request: web.Request) -> web.Response:
    refuse_if_managed(request, "delete")
    name = request.match_info["topic"]
    check_user_topic(name, "delete")
    request.app[LOGS].delete_topic(name)
    request.app[METRICS].forget_topic(name)
    await request.app[GROUPS].forget_topic(name)
    return web.Response(status=204)
