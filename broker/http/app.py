"""Assembles the broker's aiohttp application from its route modules.

Called by ``millstream.broker.server`` (and by tests that want an app without a process).
The app serves an already opened :class:`LogManager` and :class:`GroupCoordinator`, and the
:class:`ClusterNode` that says which partitions and groups are served here; opening and
closing them is the server's job, so the same app works over any data directory. Without a
node the broker is standalone (metadata pushes persist in the log manager's directory) and
without an admin token its admin routes are closed. The app owns the
:class:`~millstream.broker.cluster.mover.Mover` that copies partitions moving onto this broker:
started with the app (it resumes the moves the node replayed) and stopped before it closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from millstream.broker.cluster.mover import Mover
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.groups.coordinator import GroupCoordinator
from millstream.broker.http import admin, fetch, groups, moves, produce, replicas, topics
from millstream.broker.http.auth import AdminAuth
from millstream.broker.http.errors import error_middleware
from millstream.broker.http.keys import (
    ADMIN_AUTH,
    CLUSTER,
    GROUPS,
    LOGS,
    METRICS,
    MOVER,
    PARTITIONER,
    PEERS,
    SETTINGS,
    STOPPING,
    HttpSettings,
)
from millstream.broker.http.metrics import BrokerMetrics, metrics_middleware
from millstream.broker.http.move_source import HttpMoveSource
from millstream.broker.http.openapi import openapi_document
from millstream.broker.http.peers import Peers
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
    *,
    cluster: ClusterNode | None = None,
    admin_auth: AdminAuth | None = None,
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
    app[CLUSTER] = cluster or ClusterNode(logs, MetadataStore(logs.data_dir), broker_id=None)
    app[ADMIN_AUTH] = admin_auth or AdminAuth(None)
    app[PEERS] = peers = Peers(settings.peer_timeout_s)
    app.on_cleanup.append(peers.close)
    source = HttpMoveSource(app[ADMIN_AUTH])
    app[MOVER] = Mover(app[CLUSTER], logs, source)
    app.cleanup_ctx.append(_moving(app[MOVER], source))
    tables = (
        *(topics.routes, produce.routes, fetch.routes, groups.routes),
        *(admin.routes, moves.routes, replicas.routes, _service),
    )
    for table in tables:
        app.add_routes(table)
    return app


def _moving(
    mover: Mover, source: HttpMoveSource
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(_app: web.Application) -> AsyncIterator[None]:
        mover.start()
        try:
            yield
        finally:
            await mover.close()
            await source.close()

    return context
