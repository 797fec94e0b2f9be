"""Topic and consumer-group administration and offset lookups over the broker's HTTP API.

Used directly by applications, by the CLI's ``topics`` and ``groups`` commands, and internally
by the producer (partition counts, batch limits), the consumer (resetting and seeking
positions) and the consumer's group coordinator (partition counts for the assignment,
committed offsets, commits).

In a cluster, each call goes where it belongs (the transport routes it by its path): offset
lookups to the partition's broker, group calls to the group's coordinator, the rest to any
broker. Two calls ask several brokers: :meth:`Admin.describe_topic` completes the offsets of
partitions served elsewhere from their brokers, and :meth:`Admin.list_groups` asks every broker
for the groups it coordinates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from millstream import errors
from millstream.client.metadata import BrokerRoute
from millstream.client.models import (
    DEFAULT_URL,
    GroupDescription,
    GroupSummary,
    OffsetAndMetadata,
    TopicDescription,
    TopicMetadata,
    TopicPartition,
    TopicSummary,
    group_summary_from_json,
)
from millstream.client.transport import Transport, group_path, topic_path

OffsetSpec = Literal["earliest", "latest"] | int
ConfigValues = Mapping[str, int | str]
ResetTo = Literal["earliest", "latest", "timestamp", "offsets"]
# Keys may be TopicPartitions or plain (topic, partition) tuples (Mapping's keys are invariant).
OffsetsIn = (
    Mapping[TopicPartition, int | OffsetAndMetadata]
    | Mapping[tuple[str, int], int | OffsetAndMetadata]
)
NewOffsets = Mapping[TopicPartition, int] | Mapping[tuple[str, int], int]


class Admin:
    """Creates, lists, describes, alters and deletes topics; looks offsets up; lists,
    describes and deletes consumer groups, reads, commits and resets their offsets.

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
        """Every partition with its offsets and size (and broker, in a cluster: each
        partition's offsets come from the broker serving it)."""
        answer = await self.transport.call_json("GET", topic_path(name))
        return TopicDescription.from_json(await self._complete(name, answer))

    async def _complete(self, name: str, answer: Any) -> Any:
        """The description with the offsets of partitions served elsewhere filled in from
        the descriptions their brokers give."""
        try:
            elsewhere = {
                int(p["broker"])
                for p in answer["partitions"]
                if p.get("latest_offset") is None and p.get("broker") is not None
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            return answer  # from_json says what is wrong with it
        if not elsewhere:
            return answer
        path = topic_path(name)
        theirs = await asyncio.gather(
            *(self.transport.call_json("GET", path, route=BrokerRoute(b)) for b in elsewhere)
        )
        described = {
            int(p["partition"]): p
            for other in theirs
            for p in other["partitions"]
            if p.get("latest_offset") is not None
        }
        partitions = [described.get(int(p["partition"]), p) for p in answer["partitions"]]
        missing = [p["partition"] for p in partitions if p.get("latest_offset") is None]
        if missing:  # moved between the two lookups
            raise errors.BrokerUnavailable(
                f"no broker described partition(s) {missing} of topic {name!r}; try again"
            )
        return {**answer, "partitions": partitions}

    async def topic_metadata(self, name: str) -> TopicMetadata:
        """The partition count and settings, as any one broker knows them (cheaper than
        :meth:`describe_topic`, and not held up by other brokers)."""
        answer = await self.transport.call_json("GET", topic_path(name))
        return TopicMetadata.from_json(answer)

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

    # --- consumer groups ---------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        """Every group. A broker of a cluster lists the groups it coordinates (and says so
        with its ``broker_id``): then every broker is asked."""
        answer = await self.transport.call_json("GET", "/v1/groups")
        answers = [answer]
        if isinstance(answer, dict) and answer.get("broker_id") is not None:
            others = [
                BrokerRoute(b)
                for b in await self.transport.router.broker_ids()
                if b != answer["broker_id"]
            ]
            answers += await asyncio.gather(
                *(self.transport.call_json("GET", "/v1/groups", route=r) for r in others)
            )
        try:
            found = [group_summary_from_json(g) for answer in answers for g in answer["groups"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected group list from the broker: {exc}") from None
        return sorted(found, key=lambda g: g.group) if len(answers) > 1 else found

    async def describe_group(self, group: str) -> GroupDescription:
        """State, members and their assignments, committed offsets and lag per partition."""
        return GroupDescription.from_json(await self.transport.call_json("GET", group_path(group)))

    async def delete_group(self, group: str) -> None:
        """Delete a group without live members, with its committed offsets."""
        await self.transport.call_json("DELETE", group_path(group))

    async def committed_offsets(
        self, group: str, topics: Iterable[str] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The group's committed offsets (of ``topics`` only, if given); none for a group the
        broker does not know."""
        params = [("topic", t) for t in topics or ()]
        answer = await self.transport.call_json("GET", group_path(group, "offsets"), params=params)
        return _offsets_from(answer)

    async def commit_offsets(
        self,
        group: str,
        offsets: OffsetsIn,
        *,
        member_id: str | None = None,
        generation: int | None = None,
    ) -> None:
        """Commit ``offsets`` (the next offset to read, per partition), durably.

        Without ``member_id`` the group must have no members (a consumer that assigns itself
        its partitions); a member of the group gives its id and generation, and is refused
        (``illegal_generation``, ``unknown_member``...) when the group has moved on.
        """
        body: dict[str, Any] = {"offsets": [_commit_json(tp, o) for tp, o in offsets.items()]}
        if member_id is not None:
            body["member_id"] = member_id
        if generation is not None:
            body["generation"] = generation
        await self.transport.call_json("POST", group_path(group, "offsets"), body)

    async def reset_offsets(
        self,
        group: str,
        to: ResetTo,
        topics: Iterable[str] | None = None,
        timestamp: int | None = None,
        offsets: NewOffsets | None = None,
        dry_run: bool = False,
    ) -> dict[TopicPartition, int]:
        """Move the group's committed offsets (refused while it has live members); returns
        the new offsets, or with ``dry_run`` the ones it would set.

        ``to``: ``"earliest"``, ``"latest"``, ``"timestamp"`` (the first offset at or after
        ``timestamp`` ms) or ``"offsets"`` (exactly ``offsets``). ``topics`` defaults to every
        topic the group has committed offsets for.
        """
        body: dict[str, Any] = {"to": to, "dry_run": dry_run}
        if topics is not None:
            body["topics"] = list(topics)
        if timestamp is not None:
            body["timestamp"] = int(timestamp)
        if offsets is not None:
            body["offsets"] = [
                {"topic": t, "partition": int(p), "offset": int(o)} for (t, p), o in offsets.items()
            ]
        answer = await self.transport.call_json("POST", group_path(group, "offsets", "reset"), body)
        return {tp: committed.offset for tp, committed in _offsets_from(answer).items()}


def _commit_json(tp: tuple[str, int], offset: int | OffsetAndMetadata) -> dict[str, Any]:
    committed = offset if isinstance(offset, OffsetAndMetadata) else OffsetAndMetadata(offset)
    return {
        "topic": tp[0],
        "partition": int(tp[1]),
        "offset": committed.offset,
        "metadata": committed.metadata,
    }


def _offsets_from(answer: Any) -> dict[TopicPartition, OffsetAndMetadata]:
    try:
        return {
            TopicPartition(str(o["topic"]), int(o["partition"])): OffsetAndMetadata(
                int(o["offset"]), str(o.get("metadata") or "")
            )
            for o in answer["offsets"]
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.MillstreamError(f"unexpected offsets from the broker: {exc}") from None
