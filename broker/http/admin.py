"""Cluster metadata over HTTP: the operator's admin routes, and the public cluster view.

- ``PUT /v1/admin/cluster`` ``{"epoch", "brokers": [{"id", "url"}]}``: the brokers.
  ``DELETE /v1/admin/cluster``: leave the cluster (a drained broker about to be removed):
  the pushed topics and the metadata are deleted here.
- ``PUT /v1/admin/topics/{topic}`` ``{"partitions", "config", "placement": {"<p>": broker},
  "topic_id", "epoch"}``: create or alter a topic; this broker hosts the partitions placed on
  it. ``DELETE /v1/admin/topics/{topic}``: delete it.
- ``GET /v1/cluster`` (public): the brokers, this broker's id and every topic's placement
  and epoch, for clients to route by and for the operator to adopt a topic with its epoch;
  ``"mode": "standalone"`` on a broker that was pushed nothing.

Admin routes check the token (:mod:`~millstream.broker.http.auth`) before they read a body;
bodies are checked here and handed to :class:`~millstream.broker.cluster.node.ClusterNode`,
which checks placement and epochs, persists and applies. Called by the operator, through the
client's admin calls; nothing else needs them.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from millstream import errors
from millstream.broker.cluster.metadata import BrokerInfo, ClusterMetadata, TopicPlacement
from millstream.broker.http.keys import ADMIN_AUTH, CLUSTER, GROUPS, LOGS, METRICS
from millstream.broker.http.params import (
    INT64_MAX,
    body_int,
    json_body,
    object_body,
    topic_config,
)
from millstream.broker.http.topics import describe
from millstream.broker.storage.log_manager import MAX_PARTITIONS

routes = web.RouteTableDef()

MAX_BROKERS: Final = 10_000
MAX_BROKER_ID: Final = 2**31 - 1
MAX_URL_LENGTH: Final = 2048
MAX_TOPIC_ID_LENGTH: Final = 255


def _broker(item: Any, where: str) -> BrokerInfo:
    item = object_body(item, {"id", "url"})
    url = item.get("url")
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise errors.InvalidRequest(f"{where}.url must be a string of at most {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidRequest(f"{where}.url must be an http:// or https:// URL, got {url!r}")
    return BrokerInfo(body_int(item.get("id"), f"{where}.id", MAX_BROKER_ID), url.rstrip("/"))


def _placement(raw: Any, partitions: int) -> tuple[int, ...]:
    """``{"0": 2, "1": 0, ...}``: a broker id for every partition, by partition."""
    if not isinstance(raw, dict):
        raise errors.InvalidPlacement(
            '"placement" must map every partition ("0", "1"...) to a broker id'
        )
    wanted = {str(p) for p in range(partitions)}
    if set(raw) != wanted:
        extra, missing = sorted(set(raw) - wanted), sorted(wanted - set(raw), key=int)
        raise errors.InvalidPlacement(
            f"placement must name partitions 0 to {partitions - 1} exactly "
            f"(missing: {missing[:10]}, not partitions: {extra[:10]})"
        )
    return tuple(body_int(raw[str(p)], f"placement[{p}]", MAX_BROKER_ID) for p in range(partitions))


def _topic(name: str, body: Any) -> TopicPlacement:
    body = object_body(body, {"partitions", "config", "placement", "topic_id", "epoch"})
    partitions = body.get("partitions")
    if (
        isinstance(partitions, bool)
        or not isinstance(partitions, int)
        or not (1 <= partitions <= MAX_PARTITIONS)
    ):
        raise errors.InvalidPartitions(
            f"partitions must be an integer from 1 to {MAX_PARTITIONS}, got {partitions!r}"
        )
    topic_id = body.get("topic_id")
    if topic_id is not None and (
        not isinstance(topic_id, str) or len(topic_id) > MAX_TOPIC_ID_LENGTH
    ):
        raise errors.InvalidRequest(f'"topic_id" must be a string of at most {MAX_TOPIC_ID_LENGTH}')
    epoch = body.get("epoch")
    # The whole config: a setting left out goes back to the broker default.
    config = {k: v for k, v in (topic_config(body) or {}).items() if v is not None}
    return TopicPlacement(
        name,
        partitions,
        config,
        _placement(body.get("placement"), partitions),
        topic_id,
        None if epoch is None else body_int(epoch, '"epoch"', INT64_MAX),
    )


@routes.put("/v1/admin/cluster")
async def put_cluster(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    body = object_body(await json_body(request), {"epoch", "brokers"})
    brokers = body.get("brokers")
    if not isinstance(brokers, list) or not 1 <= len(brokers) <= MAX_BROKERS:
        raise errors.InvalidRequest(f'"brokers" must be an array of 1 to {MAX_BROKERS} brokers')
    epoch = body_int(body.get("epoch"), '"epoch"', INT64_MAX)
    cluster = request.app[CLUSTER]
    cluster.put_cluster(epoch, [_broker(b, f"brokers[{i}]") for i, b in enumerate(brokers)])
    return web.json_response(cluster_view(request))


@routes.delete("/v1/admin/cluster")
async def leave_cluster(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    cluster = request.app[CLUSTER]
    names = sorted(cluster.metadata.topics) if cluster.metadata is not None else []
    cluster.leave()
    for name in names:
        request.app[METRICS].forget_topic(name)
    return web.Response(status=204)


@routes.put("/v1/admin/topics/{topic}")
async def put_topic(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    name = request.match_info["topic"]
    topic = _topic(name, await json_body(request))
    cluster = request.app[CLUSTER]
    cluster.put_topic(topic)
    return web.json_response(describe(request.app[LOGS], name, cluster))


@routes.delete("/v1/admin/topics/{topic}")
async def delete_topic(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    name = request.match_info["topic"]
    request.app[CLUSTER].delete_topic(name)
    request.app[METRICS].forget_topic(name)
    await request.app[GROUPS].forget_topic(name)
    return web.Response(status=204)


@routes.get("/v1/cluster")
async def get_cluster(request: web.Request) -> web.Response:
    return web.json_response(cluster_view(request))


def cluster_view(request: web.Request) -> dict[str, Any]:
    cluster = request.app[CLUSTER]
    metadata = cluster.metadata
    if metadata is None:
        return {
            "mode": "standalone",
            "broker_id": cluster.broker_id,
            "epoch": None,
            "brokers": [],
            "topics": [],
        }
    return {"mode": "cluster", "broker_id": cluster.broker_id, **render(metadata)}


def render(metadata: ClusterMetadata) -> dict[str, Any]:
    return {
        "epoch": metadata.epoch,
        "brokers": [{"id": b.id, "url": b.url} for b in metadata.brokers],
        "topics": [
            {
                "name": t.name,
                "partitions": t.partitions,
                "topic_id": t.topic_id,
                "placement": {str(p): b for p, b in enumerate(t.placement)},
                "epoch": t.epoch,
            }
            for _, t in sorted(metadata.topics.items())
        ],
    }
