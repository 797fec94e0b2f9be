"""The brokers' admin API: push cluster metadata and topic placements, read back what one
broker holds.

Used by the Kubernetes operator (``millstream.operator.brokers``), and by anything else that
holds a cluster's admin token. Routes and bodies are those of docs/cluster.md:

- ``GET /v1/cluster`` (public): the metadata the broker holds, as
  :class:`~millstream.client.broker_metadata.BrokerMetadata`;
- ``PUT /v1/admin/cluster``: the brokers, with an epoch;
- ``PUT /v1/admin/topics/{topic}`` and ``DELETE /v1/admin/topics/{topic}``: one topic, whole;
- ``/v1/admin/moves`` on a receiving broker, and ``/v1/admin/partitions`` on any: partition
  moves ("Moving a partition").

A :class:`BrokerAdmin` talks to exactly the broker it was given: a push is meant for the broker
it names, never routed or redirected elsewhere (the operator pushes the same metadata to every
broker, one by one). Admin calls carry ``Authorization: Bearer <token>``; a wrong token comes
back as :class:`~millstream.errors.Forbidden`, none as :class:`~millstream.errors.Unauthorized`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from millstream import errors
from millstream.client.broker_metadata import BrokerMetadata, PlacedTopic
from millstream.client.transport import Transport, topic_path

__all__ = ["BrokerAdmin", "BrokerMetadata", "PlacedTopic", "admin_topic_path"]

CLUSTER_PATH = "/v1/cluster"
ADMIN_CLUSTER_PATH = "/v1/admin/cluster"
MOVES_PATH = "/v1/admin/moves"
PARTITIONS_PATH = "/v1/admin/partitions"


def _partition_path(base: str, topic: str, partition: int) -> str:
    return f"{base}{topic_path(topic)[len('/v1/topics') :]}/{partition}"


def admin_topic_path(topic: str) -> str:
    return "/v1/admin" + topic_path(topic)[len("/v1") :]


class BrokerAdmin:
    """The admin API of one broker, reached at ``url`` with ``token``.

    ``async with BrokerAdmin(url, token) as broker: await broker.metadata()``. Not
    thread-safe: use it from one event loop.
    """

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._transport = Transport(self.url, timeout_s=timeout_s)

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> BrokerAdmin:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        # Admin and cluster paths have no route: the transport sends them to self.url only.
        reply = await self._transport.request(method, path, json_body=body, headers=self._headers)
        return None if reply.status == 204 or not reply.body else reply.json()

    async def metadata(self) -> BrokerMetadata:
        return BrokerMetadata.from_json(await self._call("GET", CLUSTER_PATH))

    async def put_cluster(self, epoch: int, brokers: Mapping[int, str]) -> BrokerMetadata:
        """Push the cluster's brokers (id -> URL); the broker answers with all it now holds."""
        body = {
            "epoch": epoch,
            "brokers": [{"id": b, "url": url} for b, url in sorted(brokers.items())],
        }
        return BrokerMetadata.from_json(await self._call("PUT", ADMIN_CLUSTER_PATH, body))

    async def leave_cluster(self) -> None:
        """Make a drained broker leave the cluster (it deletes what was pushed to it)."""
        await self._call("DELETE", ADMIN_CLUSTER_PATH)

    async def put_topic(
        self,
        name: str,
        *,
        placement: Mapping[int, int],
        config: Mapping[str, int] | None = None,
        topic_id: str | None = None,
        epoch: int | None = None,
    ) -> Any:
        """Push a whole topic: its partitions are those ``placement`` names (0 to n-1), and
        ``config`` is every override (a setting left out goes back to the broker default).
        Returns the topic as ``GET /v1/topics/{topic}`` describes it."""
        body: dict[str, Any] = {
            "partitions": len(placement),
            "placement": {str(p): b for p, b in sorted(placement.items())},
            "config": dict(config or {}),
        }
        if topic_id is not None:
            body["topic_id"] = topic_id
        if epoch is not None:
            body["epoch"] = epoch
        return await self._call("PUT", admin_topic_path(name), body)

    async def delete_topic(self, name: str) -> bool:
        """Delete the topic and what this broker holds of it; False if it had no such topic."""
        try:
            await self._call("DELETE", admin_topic_path(name))
        except errors.UnknownTopic:
            return False
        return True

    async def describe_topic(self, name: str) -> Any | None:
        """``GET /v1/topics/{topic}`` as the broker answers it; None if it has no such topic."""
        try:
            return await self._call("GET", topic_path(name))
        except errors.UnknownTopic:
            return None

    # --- partition moves (docs/cluster.md, "Moving a partition") ---

    async def start_move(
        self, topic: str, partition: int, *, source: int, throttle_bytes_per_s: int | None
    ) -> Any:
        """Start (or restart, or re-throttle) copying a partition onto this broker from
        ``source``; the move."""
        body = {
            "topic": topic,
            "partition": partition,
            "source": source,
            "throttle_bytes_per_s": throttle_bytes_per_s,
        }
        return await self._call("POST", MOVES_PATH, body)

    async def move(self, topic: str, partition: int) -> Any | None:
        """The move of a partition onto this broker; None if it has none."""
        try:
            return await self._call("GET", _partition_path(MOVES_PATH, topic, partition))
        except errors.NotFound:
            return None

    async def cancel_move(self, topic: str, partition: int) -> bool:
        """Cancel a move (its copy is deleted), or forget a completed one; False if none."""
        try:
            await self._call("DELETE", _partition_path(MOVES_PATH, topic, partition))
        except errors.NotFound:
            return False
        return True

    async def partitions(self) -> Any:
        """``GET /v1/admin/partitions``: what this broker serves, receives and keeps retired."""
        return await self._call("GET", PARTITIONS_PATH)

    async def release_partition(self, topic: str, partition: int) -> bool:
        """Delete this broker's retired copy of a partition; False if it has none."""
        try:
            await self._call("DELETE", _partition_path(PARTITIONS_PATH, topic, partition))
        except errors.NotFound:
            return False
        return True
