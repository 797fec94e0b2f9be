"""The ``cooperative-sticky`` assignor: Kafka's CooperativeStickyAssignor semantics (KIP-429).

Called through :func:`millstream.client.assignors.assignor_for` by the group leader. Members
keep their partitions while they rejoin, and each sends the partitions it owns and the
generation it got them in (``Subscription.owned``, ``Subscription.generation``). The leader:

1. decides who owns each partition now: the claimant of the highest generation (a lower one
   is a member that missed a rebalance); between claimants of one generation, which a correct
   group never produces, the smallest member id, so that the result stays deterministic;
2. computes the target: every owner keeps what it owns while it still subscribes to the
   topic, the remaining partitions go to the least loaded subscriber (partitions with the
   fewest possible takers first), then partitions move from the most to the least loaded
   member until no move can narrow a gap of two or more (Kafka's definition of balanced when
   subscriptions differ). A move takes, where it can, a partition its giver did not own, which
   revokes nothing. Members with the same subscription then differ by at most one partition,
   and a member loses an owned partition only to balance;
3. withholds every partition whose owner changes: it is in nobody's assignment this round, so
   its old owner revokes it and rejoins, and the next round gives it to the new owner. No
   partition is owned by two members of one generation.

A group with identical subscriptions settles in two rounds; with different subscriptions a
round or two more can be needed (three, rarely four, in random trials), as the target of one
round is computed afresh from what members own after the last.

Every choice breaks ties by sorted order, so the same input gives the same output whatever
the order of the mappings and whatever the process's hash seed.

Why not kafka-python's ``CooperativeStickyAssignor`` (3.0.12), which we tried first: its output
depends on the process's hash seed (its sticky engine picks a partition to move back with
``next(iter(...))`` over a set of topic-partitions, and sets of strings iterate in a per-process
random order: 2 topics of 8 and 7 partitions, 5 members with different subscriptions, and one
member keeps ``t0`` partition 3 under one ``PYTHONHASHSEED`` and partition 4 under another),
and it resolves two claims on one partition by the order of the members rather than by
generation (its cooperative step takes the last member listing the partition; its engine keeps
the first claim of a generation, except generation 0, where the last wins): with overlapping
claims, 184 of 300 random groups got a different assignment when only the member order changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, Literal

from millstream.client.models import TopicPartition
from millstream.consumer_protocol import Subscription

__all__ = ["CooperativeStickyAssignor"]


class CooperativeStickyAssignor:
    name: ClassVar[str] = "cooperative-sticky"
    rebalance_protocol: ClassVar[Literal["cooperative"]] = "cooperative"

    def assign(
        self, partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
    ) -> dict[str, list[TopicPartition]]:
        owners = _current_owners(partitions, subscriptions)
        target = _sticky_balanced_target(partitions, subscriptions, owners)
        return {
            member_id: [tp for tp in assigned if owners.get(tp, member_id) == member_id]
            for member_id, assigned in target.items()
        }


def _current_owners(
    partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
) -> dict[TopicPartition, str]:
    """Who owns each existing partition before this round, by the members' own claims."""
    claims: dict[TopicPartition, tuple[int, str]] = {}
    # Sorted ids and a strict comparison: within one generation the smallest id wins.
    for member_id in sorted(subscriptions):
        generation = subscriptions[member_id].generation
        for topic, partition in subscriptions[member_id].owned:
            if not 0 <= partition < partitions.get(topic, 0):
                continue  # a deleted topic or partition: nothing to hand over
            tp = TopicPartition(topic, partition)
            held = claims.get(tp)
            if held is None or generation > held[0]:
                claims[tp] = (generation, member_id)
    return {tp: member_id for tp, (_, member_id) in claims.items()}


def _sticky_balanced_target(
    partitions: Mapping[str, int],
    subscriptions: Mapping[str, Subscription],
    owners: Mapping[TopicPartition, str],
) -> dict[str, list[TopicPartition]]:
    subscribers = _subscribers_by_topic(partitions, subscriptions)
    placement = _Placement(subscribers, sorted(subscriptions))
    unowned: list[TopicPartition] = []
    for topic in sorted(subscribers):
        for partition in range(partitions[topic]):
            tp = TopicPartition(topic, partition)
            owner = owners.get(tp)
            if owner is not None and owner in subscribers[topic]:
                placement.keep(owner, tp)
            else:
                unowned.append(tp)
    # The partitions with the fewest possible takers first, while there is room to choose.
    unowned.sort(key=lambda tp: (len(subscribers[tp.topic]), tp))
    for tp in unowned:
        placement.give(placement.least_loaded(tp.topic), tp)
    placement.balance()
    return placement.assignment()


def _subscribers_by_topic(
    partitions: Mapping[str, int], subscriptions: Mapping[str, Subscription]
) -> dict[str, tuple[str, ...]]:
    """Each existing topic with at least one subscriber, and its subscribers sorted."""
    subscribers: dict[str, set[str]] = {}
    for member_id, subscription in subscriptions.items():
        for topic in subscription.topics:
            if partitions.get(topic, 0) > 0:
                subscribers.setdefault(topic, set()).add(member_id)
    return {topic: tuple(sorted(members)) for topic, members in subscribers.items()}


class _Placement:
    """The target assignment under construction. Not shared: one per :meth:`assign` call.

    Members are only ever compared by ``(load, member id)`` and partitions by their sorted
    order, never by the iteration order of a set, which would vary with the hash seed.
    """

    def __init__(self, subscribers: Mapping[str, tuple[str, ...]], members: Iterable[str]) -> None:
        self._subscribers = subscribers
        # Topics with the same subscribers share their least loaded one: computed once a move.
        groups: dict[tuple[str, ...], int] = {}
        self._group_of = {
            topic: groups.setdefault(takers, len(groups)) for topic, takers in subscribers.items()
        }
        self._held: dict[str, dict[str, set[int]]] = {member: {} for member in members}
        # The part of _held its holder did not own: moving it revokes nothing.
        self._not_owned: dict[str, dict[str, set[int]]] = {member: {} for member in self._held}
        self._load = dict.fromkeys(self._held, 0)
        self._owner: dict[TopicPartition, str] = {}

    def keep(self, owner: str, tp: TopicPartition) -> None:
        self._add(owner, tp)
        self._owner[tp] = owner

    def give(self, member: str, tp: TopicPartition) -> None:
        self._add(member, tp)
        if self._owner.get(tp) != member:
            self._not_owned[member].setdefault(tp.topic, set()).add(tp.partition)

    def _add(self, member: str, tp: TopicPartition) -> None:
        self._held[member].setdefault(tp.topic, set()).add(tp.partition)
        self._load[member] += 1

    def least_loaded(self, topic: str) -> str:
        return min(self._subscribers[topic], key=lambda member: (self._load[member], member))

    def balance(self) -> None:
        """Move partitions until no member could take one from a member with two more.

        Each move lowers the sum of the squared loads by at least two, so this ends.
        """
        while (move := self._next_move()) is not None:
            giver, topic, taker = move
            # Rather a partition whose move revokes nothing; the highest, for determinism.
            partition = max(self._not_owned[giver].get(topic) or self._held[giver][topic])
            self._held[giver][topic].discard(partition)
            self._not_owned[giver].get(topic, set()).discard(partition)
            self._load[giver] -= 1
            self.give(taker, TopicPartition(topic, partition))

    def _next_move(self) -> tuple[str, str, str] | None:
        """The most loaded member that can give, the topic it gives from, and to whom."""
        lightest = min(self._load.values(), default=0)
        for giver in sorted(self._load, key=lambda member: (-self._load[member], member)):
            if self._load[giver] < lightest + 2:
                return None
            taker_of_group: dict[int, str] = {}
            candidates = []
            for topic, held in sorted(self._held[giver].items()):
                group = self._group_of[topic]
                if group not in taker_of_group:
                    taker_of_group[group] = self.least_loaded(topic)
                taker = taker_of_group[group]
                if held and self._load[taker] + 2 <= self._load[giver]:
                    # The least loaded taker first, then a topic whose move revokes nothing.
                    revokes = not self._not_owned[giver].get(topic)
                    candidates.append((self._load[taker], revokes, taker, topic))
            if candidates:
                _, _, taker, topic = min(candidates)
                return giver, topic, taker
        return None

    def assignment(self) -> dict[str, list[TopicPartition]]:
        return {
            member: sorted(
                TopicPartition(topic, partition)
                for topic, held in by_topic.items()
                for partition in held
            )
            for member, by_topic in self._held.items()
        }
