"""Typed application state shared by the handlers (aiohttp ``AppKey``s), no globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from millstream.broker.cluster.mover import Mover
from millstream.broker.cluster.node import ClusterNode
from millstream.broker.groups.coordinator import GroupCoordinator
from millstream.broker.http.auth import AdminAuth
from millstream.broker.http.metrics import BrokerMetrics
from millstream.broker.http.peers import Peers
from millstream.broker.storage.log_manager import LogManager
from millstream.partitioner import StickyPartitioner


@dataclass(frozen=True, slots=True)
class HttpSettings:
    max_request_bytes: int = 64 * 1024 * 1024 + 64 * 1024
    default_fetch_bytes: int = 1024 * 1024
    max_wait_ms: int = 60_000
    # How long a coordinator waits for another broker's log end offset (lag of a group).
    peer_timeout_s: float = 1.0


LOGS = web.AppKey("logs", LogManager)
GROUPS = web.AppKey("groups", GroupCoordinator)
METRICS = web.AppKey("metrics", BrokerMetrics)
PARTITIONER = web.AppKey("partitioner", StickyPartitioner)
SETTINGS = web.AppKey("settings", HttpSettings)
CLUSTER = web.AppKey("cluster", ClusterNode)
ADMIN_AUTH = web.AppKey("admin_auth", AdminAuth)
PEERS = web.AppKey("peers", Peers)
MOVER = web.AppKey("mover", Mover)
# Set when the broker begins to shut down: long polls and streams end early.
STOPPING = web.AppKey("stopping", asyncio.Event)
