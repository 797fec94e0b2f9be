"""Typed application state shared by the handlers (aiohttp ``AppKey``s), no globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from millstream.broker.groups.coordinator import GroupCoordinator
from millstream.broker.http.metrics import BrokerMetrics
from millstream.broker.storage.log_manager import LogManager
from millstream.partitioner import StickyPartitioner


@dataclass(frozen=True, slots=True)
class HttpSettings:
    max_request_bytes: int = 64 * 1024 * 1024 + 64 * 1024
    default_fetch_bytes: int = 1024 * 1024
    max_wait_ms: int = 60_000


LOGS = web.AppKey("logs", LogManager)
GROUPS = web.AppKey("groups", GroupCoordinator)
METRICS = web.AppKey("metrics", BrokerMetrics)
PARTITIONER = web.AppKey("partitioner", StickyPartitioner)
SETTINGS = web.AppKey("settings", HttpSettings)
# Set when the broker begins to shut down: long polls and streams end early.
STOPPING = web.AppKey("stopping", asyncio.Event)
