"""Assembles the broker's aiohttp application from its route modules.

Called by ``millstream.broker.server`` (and by tests that want an app without a process).
The app serves an already opened :class:`LogManager` and :class:`GroupCoordinator`; opening
and closing them is the server's job, so the same app works over any data directory.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from millstream.broker.groups.coordinator import GroupCoordinator
from millstream.broker.http import fetch, groups, produce, topics
from millstream.broker.http.errors import error_middleware
from millstream.broker.http.keys import (
    GROUPS,
    LOGS,
    METRICS,
    PARTITIONER,
    SETTINGS,
    STOPPING,
    HttpSettings,
)
from millstream.broker.http.metrics import BrokerMetrics, metrics_middleware
from millstream.broker.http.openapi import openapi_document
from millstream.broker.storage.log_manager import LogManager
from millstream.partitioner import StickyPartitioner

_service = web.RouteTableDef()
_OPENAPI = json.dumps(openapi_document())


@_service.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_OPENAPI, content_type="application/json")


@_service.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@_service.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@_service.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[STOPPING].is_set():
        return web.json_response({"status": "stopping"}, status=503)
    return web.json_response({"status": "ready"})


def make_app(
    logs: LogManager,
    coordinator: GroupCoordinator,
    metrics: BrokerMetrics,
    settings: HttpSettings | None = None,
) -> web.Application:
    settings = settings or HttpSettings()
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[metrics_middleware(metrics), error_middleware],  # type: ignore[list-item]
    )
    app[LOGS] = logs
    app[GROUPS] = coordinator
    app[METRICS] = metrics
    app[SETTINGS] = settings
    app[PARTITIONER] = StickyPartitioner()
    app[STOPPING] = asyncio.Event()
    for table in (topics.routes, produce.routes, fetch.routes, groups.routes, _service):
        app.add_routes(table)
    return app
