"""Whether a request's partition or group is served by this broker, before a handler acts.

Used by the produce, fetch and group routes. In a cluster, a partition placed on another
broker is answered 421 ``not_leader`` and a group coordinated by another 421
``not_coordinator``, both naming that broker (``{"error": {..., "broker": {"id", "url"}}}``),
so a client can go there and refresh its metadata; a standalone broker serves everything.
"""

from __future__ import annotations

from aiohttp import web

from millstream.broker.http.keys import CLUSTER, LOGS
from millstream.broker.storage.partition_log import PartitionLog


def local_log(request: web.Request, topic: str, partition: int) -> PartitionLog:
    """The partition's log, if this broker serves it; NotLeader (or 404) otherwise."""
    request.app[CLUSTER].check_local(topic, partition)
    return request.app[LOGS].log(topic, partition)


def check_coordinator(request: web.Request, group_id: str) -> str:
    """``group_id``, if this broker coordinates the group; NotCoordinator otherwise."""
    request.app[CLUSTER].check_coordinator(group_id)
    return group_id
