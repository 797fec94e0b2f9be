"""Partition assignors: how a consumer group's leader splits partitions among the members.

Called by the client's group membership code: every member lists the assignors it supports
when it joins (by :data:`ASSIGNORS` name), and the member the broker elects leader looks up
the chosen one with :func:`assignor_for` and runs :meth:`Assignor.assign` on the decoded
subscriptions of the whole group (:mod:`millstream.consumer_protocol`). Assignors are pure
functions of their input: no I/O, no state between calls, the same answer for the same input.

``rebalance_protocol`` tells the member what to do when it rejoins: ``eager`` members give up
every partition first; ``cooperative`` members keep theirs, and the assignor hands a moving
partition to its new owner only in the round after its old owner has let it go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from millstream.client.assignors.cooperative_sticky_assignor import CooperativeStickyAssignor
from millstream.client.assignors.range_assignor import RangeAssignor
from millstream.client.assignors.roundrobin_assignor import RoundRobinAssignor
from millstream.client.models import TopicPartition
from millstream.consumer_protocol import Subscription

__all__ = [
    "ASSIGNORS",
    "Assignor",
    "CooperativeStickyAssignor",
    "RangeAssignor",
    "RebalanceProtocol",
    "RoundRobinAssignor",
    "assignor_for",
]

RebalanceProtocol = Literal["eager", "cooperative"]


class Assignor(Protocol):
    @property
    def name(self) -> str:
        """The protocol name members advertise when they join, e.g. ``"range"``."""

    @property
    def rebalance_protocol(self) -> RebalanceProtocol: ...

    def assign(
        self, partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, list[TopicPartition]]:
        """Split the partitions among the members.

        ``partitions`` maps each known topic to its partition count, ``subscriptions`` each
        member id to its subscription. The answer has every member id, each with a sorted
        list of partitions of topics it subscribes to; every partition of a subscribed topic
        goes to exactly one member, except that a cooperative assignor leaves out, for one
        round, a partition that changes owner. Subscribed topics missing from ``partitions``
        are ignored.
        """
        ...


_BY_NAME: dict[str, Assignor] = {
    assignor.name: assignor
    for assignor in (RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor())
}

ASSIGNORS: tuple[str, ...] = tuple(_BY_NAME)


def assignor_for(name: str) -> Assignor:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(ASSIGNORS)
        raise ValueError(f"unknown partition assignor {name!r} (known: {known})") from None
