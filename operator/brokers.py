"""The operator's calls to a cluster's brokers, over their HTTP API (``millstream.client``).

Used by the handlers: :class:`Brokers` reads every broker's metadata and pushes the cluster,
topics and deletions to every broker, concurrently, each broker on its own (one that does not
answer does not stop the others); the results say which failed and why, and the handler
decides (:mod:`.plan`) what that means. Consumer-group calls go through the ordinary client,
which routes them to the group's coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from millstream import errors
from millstream.client.admin import Admin
from millstream.client.cluster_admin import BrokerAdmin, BrokerMetadata
from millstream.client.transport import group_path
from millstream.operator.cluster_plan import ClusterPush, cluster_push
from millstream.operator.plan import TopicTarget, topic_pushes
from millstream.operator.specs import OffsetReset

T = TypeVar("T")


@dataclass
class SyncReport:
    """What one pass over a cluster's brokers did."""

    views: dict[int, BrokerMetadata | None]
    failures: dict[int, str] = field(default_factory=dict)  # broker -> why it failed
    cluster_pushed: ClusterPush | None = None
    restored: list[tuple[int, str]] = field(default_factory=list)  # (broker, topic)


class Brokers:
    """The brokers of one cluster: ``urls`` by broker id, and the admin token."""

    def __init__(self, urls: Sequence[str], token: str, *, timeout_s: float) -> None:
        self.urls = dict(enumerate(urls))
        self.token = token
        self._admins = {
            b: BrokerAdmin(url, token, timeout_s=timeout_s) for b, url in self.urls.items()
        }

    def admin(self, broker: int) -> BrokerAdmin:
        """The admin API of one broker (KeyError for one this cluster does not list)."""
        return self._admins[broker]

    async def close(self) -> None:
        await asyncio.gather(*(admin.close() for admin in self._admins.values()))

    async def __aenter__(self) -> Brokers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _each(
        self, brokers: Sequence[int], call: Callable[[BrokerAdmin], Awaitable[T]]
    ) -> tuple[dict[int, T], dict[int, str]]:
        """``call`` on each broker at once: the answers, and the failures' messages."""

        async def one(broker: int) -> T:
            return await call(self._admins[broker])

        results = await asyncio.gather(*(one(b) for b in brokers), return_exceptions=True)
        answers: dict[int, T] = {}
        failures: dict[int, str] = {}
        for broker, result in zip(brokers, results, strict=True):
            if isinstance(result, errors.MillstreamError):
                failures[broker] = f"{result.code}: {result.message}"
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[broker] = result
        return answers, failures

    async def views(self) -> tuple[dict[int, BrokerMetadata | None], dict[int, str]]:
        """Every broker's metadata (None for those that did not answer), and the failures."""
        answers, failures = await self._each(list(self.urls), lambda a: a.metadata())
        return {b: answers.get(b) for b in self.urls}, failures

    async def describe_topic(self, name: str) -> dict[int, Any]:
        """Each broker's description of a topic (None where it has none or did not answer)."""
        answers, _ = await self._each(list(self.urls), lambda a: a.describe_topic(name))
        return {b: answers.get(b) for b in self.urls}

    async def push_topic(
        self, target: TopicTarget, brokers: Sequence[int] | None = None
    ) -> dict[int, str]:
        """Push a topic to ``brokers`` (default: all); the failures."""
        _, failures = await self._each(
            list(self.urls) if brokers is None else brokers,
            lambda a: a.put_topic(
                target.name,
                placement=target.placement,
                config=target.config,
                topic_id=target.topic_id,
                epoch=target.epoch,
            ),
        )
        return failures

    async def delete_topic(self, name: str) -> dict[int, str]:
        """Delete a topic from every broker (those without it are fine); the failures."""
        _, failures = await self._each(list(self.urls), lambda a: a.delete_topic(name))
        return failures

    async def sync(self, targets: Sequence[TopicTarget]) -> SyncReport:
        """Bring every reachable broker to the cluster's metadata and ``targets``: push the
        cluster where a broker lacks it, then each topic a broker does not hold as its target
        says."""
        views, failures = await self.views()
        report = SyncReport(views, failures)
        push = cluster_push(views, self.urls)
        if push is not None:
            answers, failed = await self._each(
                push.brokers, lambda a: a.put_cluster(push.epoch, self.urls)
            )
            report.cluster_pushed = push
            report.failures.update(failed)
            for broker in push.brokers:
                views[broker] = answers.get(broker)
        for broker, topics in topic_pushes(views, targets).items():
            for target in topics:
                failed = await self.push_topic(target, [broker])
                if failed:
                    report.failures.update(failed)
                    break
                report.restored.append((broker, target.name))
        return report


async def describe_group(bootstrap: str, group: str, *, timeout_s: float) -> Any | None:
    """The coordinator's description of a group (``GET /v1/groups/{group}``), None when it
    does not know the group."""
    async with Admin(bootstrap, timeout_s=timeout_s) as admin:
        try:
            return await admin.transport.call_json("GET", group_path(group))
        except errors.UnknownGroup:
            return None


async def reset_offsets(
    bootstrap: str, group: str, reset: OffsetReset, *, timeout_s: float
) -> list[dict[str, Any]]:
    """Apply a declared offset reset; the offsets the coordinator set. Raises GroupNotEmpty
    while the group has live members."""
    offsets: Mapping[tuple[str, int], int] | None = None
    if reset.offsets is not None:
        offsets = {(o.topic, o.partition): o.offset for o in reset.offsets}
    async with Admin(bootstrap, timeout_s=timeout_s) as admin:
        applied = await admin.reset_offsets(
            group, reset.to, topics=reset.topics, timestamp=reset.timestamp, offsets=offsets
        )
    return [
        {"topic": tp.topic, "partition": tp.partition, "offset": offset}
        for tp, offset in sorted(applied.items())
    ]
