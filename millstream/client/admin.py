"""Topic administration and offset lookups over the broker's HTTP API.

Used directly by applications and by the CLI's ``topics`` commands, and internally by the
producer (partition counts, batch limits) and the consumer (resetting and seeking positions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from millstream import errors
from millstream.client.models import DEFAULT_URL, TopicDescription, TopicSummary
from millstream.client.transport import Transport, topic_path

OffsetSpec = Literal["earliest", "latest"] | int
ConfigValues = Mapping[str, int | str]


class Admin:
    """Creates, lists, describes, alters and deletes topics; looks offsets up.

    ``async with Admin(url) as admin: await admin.create_topic("orders", partitions=3)``.
    Given a :class:`Transport` instead of a URL, it shares it and leaves closing it to its owner.
    """

    def __init__(self, url: str | Transport = DEFAULT_URL, *, timeout_s: float = 30.0) -> None:
        self._owns_transport = not isinstance(url, Transport)
        self.transport = Transport(url, timeout_s=timeout_s) if isinstance(url, str) else url

    async def close(self) -> None:
        if self._owns_transport:
            await self.transport.close()

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def create_topic(
        self, name: str, partitions: int = 1, config: ConfigValues | None = None
    ) -> TopicDescription:
        body: dict[str, Any] = {
            "name": name,
            "partitions": partitions,
            "config": dict(config or {}),
        }
        return TopicDescription.from_json(
            await self.transport.call_json("POST", "/v1/topics", body)
        )

    async def list_topics(self) -> list[TopicSummary]:
        answer = await self.transport.call_json("GET", "/v1/topics")
        try:
            return [TopicSummary(str(t["name"]), int(t["partitions"])) for t in answer["topics"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected topic list from the broker: {exc}") from None

    async def describe_topic(self, name: str) -> TopicDescription:
        return TopicDescription.from_json(await self.transport.call_json("GET", topic_path(name)))

    async def alter_topic(
        self, name: str, *, partitions: int | None = None, config: ConfigValues | None = None
    ) -> TopicDescription:
        """Grow the partition count and/or change settings (only those named change)."""
        body: dict[str, Any] = {}
        if partitions is not None:
            body["partitions"] = partitions
        if config:
            body["config"] = dict(config)
        if not body:
            raise errors.InvalidRequest("nothing to alter: give partitions and/or config")
        answer = await self.transport.call_json("PATCH", topic_path(name), body)
        return TopicDescription.from_json(answer)

    async def delete_topic(self, name: str) -> None:
        await self.transport.call_json("DELETE", topic_path(name))

    async def offset_for(self, topic: str, partition: int, at: OffsetSpec) -> int:
        """The earliest offset, the log end offset, or the first offset at or after ``at`` ms."""
        path = topic_path(topic, "partitions", partition, "offsets")
        answer = await self.transport.call_json("GET", path, params={"at": str(at)})
        try:
            return int(answer["offset"])
        except (KeyError, TypeError, ValueError):
            raise errors.MillstreamError(f"unexpected offset answer: {answer!r}") from None
