"""This broker as a member of a cluster: applies metadata pushes, routes partitions and groups.

Created by the server next to the log manager (one per process) and used by the HTTP layer:
the admin routes push through it, and every route that touches a partition or a group asks it
first whether that partition or group is served here (:meth:`ClusterNode.check_local`,
:meth:`ClusterNode.check_coordinator`); if not, the error names the broker that serves it.

Without metadata (standalone) every check passes and the broker behaves as it always did.

A push is checked whole (placement, epochs, partition count, config), then persisted
(:mod:`~millstream.broker.cluster.store`), then applied to the
:class:`~millstream.broker.storage.log_manager.LogManager`: every broker knows every topic
(its partition count and config, so that keys and commits are checked against the whole
topic) and hosts the partitions placed on it. The file is written before the logs change, and
:meth:`ClusterNode.reconcile` replays it at start, so a crash between the two is repaired by
the next start. Topics a standalone broker created before it joined a cluster are kept as
they are until a push names them (the operator adopts them).

Moves (:mod:`~millstream.broker.cluster.moves`) live here too, stored in the same file: the
moves onto this broker (their copies are held, not served, until complete) and the retired
copies of partitions that moved away. :meth:`ClusterNode.check_local` answers
``partition_moving`` for a partition placed here whose copy is not complete yet.
:meth:`ClusterNode.fence` is the other side of a switch: the partition placed on its new
broker and retired here. The copying itself is :mod:`~millstream.broker.cluster.mover`'s,
which listens to the node (:meth:`ClusterNode.on_change`) for moves to start, switch or stop.

Not thread-safe: used on the event loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from millstream import errors
from millstream.broker.cluster import moves
from millstream.broker.cluster.metadata import (
    BrokerInfo,
    ClusterMetadata,
    TopicPlacement,
    make_cluster,
    with_topic,
    without_topic,
)
from millstream.broker.cluster.moves import Move, MoveState, PartitionKey, Transfers
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.storage.log_manager import LogManager, check_topic_name
from millstream.broker.storage.partition_log import PartitionLog
from millstream.internal_topics import GROUP_OFFSETS_TOPIC

logger = logging.getLogger(__name__)

_ACTIVE = (MoveState.COPYING, MoveState.SWITCHING)  # moves whose copy is still wanted


class ClusterNode:
    def __init__(self, logs: LogManager, store: MetadataStore, broker_id: int | None) -> None:
        self._logs = logs
        self._store = store
        self.broker_id = broker_id
        self.metadata: ClusterMetadata | None = None
        self.transfers = Transfers()
        self._listeners: list[Callable[[], None]] = []

    @property
    def managed(self) -> bool:
        """Whether the broker is part of a cluster whose metadata an operator pushes."""
        return self.metadata is not None

    # --- start ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Load the stored metadata and make the logs match it (blocking: before serving)."""
        stored = self._store.load()
        if stored is None:
            return
        if self.broker_id is None:
            self.broker_id = stored.broker_id
        elif stored.broker_id != self.broker_id:
            raise errors.InvalidPlacement(
                f"{self._store.path} was pushed to broker {stored.broker_id}, but this is broker "
                f"{self.broker_id}: is the data directory mounted on the wrong broker?"
            )
        self.metadata, self.transfers = stored.metadata, stored.transfers
        for topic in stored.metadata.topics.values():
            self._apply(topic)
        logger.info(
            "broker %d of a cluster of %d (epoch %d), %d topic(s) placed, %d move(s), "
            "%d retired copies",
            *(self.broker_id, len(stored.metadata.brokers), stored.metadata.epoch),
            *(len(stored.metadata.topics), len(self.transfers.moves), len(self.transfers.retired)),
        )

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change of moves or placement."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def _commit(self, metadata: ClusterMetadata, transfers: Transfers) -> None:
        self._store.save(self._own_id(), metadata, transfers)
        self.metadata, self.transfers = metadata, transfers

    # --- pushes ---------------------------------------------------------------------------

    def put_cluster(self, epoch: int, brokers: Iterable[BrokerInfo]) -> ClusterMetadata:
        self._own_id()
        metadata = make_cluster(self.metadata, epoch, brokers)
        self._commit(metadata, self.transfers)
        logger.info(
            "cluster epoch %d: brokers %s", epoch, ", ".join(str(b.id) for b in metadata.brokers)
        )
        self._changed()
        return metadata

    def put_topic(self, topic: TopicPlacement) -> TopicPlacement:
        """Apply a topic push. A moving partition placed here starts switching; one placed
        elsewhere now is retired here (kept read-only until released)."""
        broker_id = self._own_id()
        check_topic_name(topic.name)
        # Checked as storage will (config, a shrink of a topic created before the cluster)
        # before anything is written; config values are kept as integers.
        parsed = self._logs.defaults.with_updates(topic.config).to_mapping()
        topic = replace(topic, config={name: parsed[name] for name in topic.config})
        metadata = with_topic(self.metadata, topic)
        if topic.name in self._logs.topic_names():
            known = self._logs.topic(topic.name).partitions
            if topic.partitions < known:
                raise errors.InvalidPartitions(
                    f"topic {topic.name!r} has {known} partitions; they can only grow"
                )
        old = None if self.metadata is None else self.metadata.topics.get(topic.name)
        transfers = moves.after_push(self.transfers, old, topic, broker_id)
        self._commit(metadata, transfers)
        self._apply(topic)
        self._changed()
        return topic

    def delete_topic(self, name: str) -> None:
        """Forget the topic and delete what this broker holds of it."""
        self._own_id()
        placed = self.metadata is not None and name in self.metadata.topics
        local = name in self._logs.topic_names()
        if not placed and not local:
            raise errors.UnknownTopic(f"topic {name!r} does not exist")
        if self.metadata is not None and placed:
            metadata = without_topic(self.metadata, name)
            self._commit(metadata, self.transfers.without_topic(name))
        if local:
            self._logs.delete_topic(name)
        self._changed()

    def leave(self) -> None:
        """Leave the cluster: delete every topic the pushes put here, with what this broker
        holds of it, and forget the metadata. Refused while the broker serves a partition,
        copies one in, or keeps a retired copy (move or release them first). The operator
        calls it on a drained broker before the StatefulSet removes it, so that a volume kept
        for it holds nothing stale if a broker with its id ever joins again. Idempotent."""
        broker_id = self._own_id()
        if self.metadata is None:
            return
        busy = sorted(
            (t.name, p) for t in self.metadata.topics.values() for p in t.hosted_by(broker_id)
        )
        busy += sorted(k for k, m in self.transfers.moves.items() if m.state in _ACTIVE)
        # A retired copy may be what a switching receiver still copies its tail from: only
        # whoever knows the move completed (the operator) releases it, before the broker goes.
        busy += sorted(self.transfers.retired)
        if busy:
            raise errors.MoveConflict(
                f"broker {broker_id} still serves, receives or keeps retired {len(busy)} "
                f"partition(s) (first {busy[0][0]}/{busy[0][1]}): move or release them first"
            )
        for name in sorted(self.metadata.topics):
            if name in self._logs.topic_names():
                self._logs.delete_topic(name)
        self._store.clear()
        self.metadata, self.transfers = None, Transfers()
        logger.info("broker %d left the cluster: its topics and metadata are gone", broker_id)
        self._changed()

    def _apply(self, topic: TopicPlacement) -> None:
        hosted, held = moves.placement_here(self.transfers, topic, self.broker_id)
        self._logs.ensure_topic(topic.name, topic.partitions, topic.config, hosted, held)

    def _apply_topic(self, name: str) -> None:
        if self.metadata is not None and name in self.metadata.topics:
            self._apply(self.metadata.topics[name])

    # --- moves onto this broker -----------------------------------------------------------

    def move(self, topic: str, partition: int) -> Move:
        found = self.transfers.moves.get((topic, partition))
        if found is None:
            raise errors.UnknownMove(f"no move of {topic}/{partition} onto this broker")
        return found

    def list_moves(self) -> list[Move]:
        return [m for _, m in sorted(self.transfers.moves.items())]

    def start_move(
        self,
        topic: str,
        partition: int,
        source: int | None,
        throttle_bytes_per_s: int | None,
        now_ms: int,
    ) -> tuple[Move, bool]:
        """Start copying a partition here from the broker serving it (``source``, if given,
        must be that broker). Idempotent: returns the move, and whether it is new."""
        broker_id = self._own_id()
        owner = self.owner(topic, partition)
        default_source = owner.id if owner is not None else -1
        request = Move(
            topic,
            partition,
            default_source if source is None else source,
            throttle_bytes_per_s=throttle_bytes_per_s,
            created_ms=now_ms,
        )
        before = self.transfers.moves.get(request.key)
        transfers = moves.start_move(self.transfers, self.metadata, broker_id, request)
        started = transfers.moves[request.key]
        if transfers is not self.transfers:
            assert self.metadata is not None
            self._commit(self.metadata, transfers)
            self._apply_topic(topic)
            self._changed()
        created = before is None or before.state is not MoveState.COPYING
        if created:
            logger.info("move of %s/%d from broker %d started", topic, partition, started.source)
        return started, created

    def update_move(self, key: PartitionKey, **changes: Any) -> Move:
        """Record progress of a move (the mover's): its final offset, a failure, release."""
        move = replace(self.move(*key), **changes)
        assert self.metadata is not None
        self._commit(self.metadata, self.transfers.with_move(move))
        self._changed()
        return move

    def complete_move(self, key: PartitionKey, now_ms: int) -> Move:
        """The copy is complete: serve it. The caller made sure it reached the final offset
        and is durable."""
        move = self.move(*key)
        if move.state is not MoveState.SWITCHING:
            raise errors.MoveConflict(f"the move of {key[0]}/{key[1]} is {move.state}")
        done = replace(move, state=MoveState.COMPLETED, completed_ms=now_ms, error=None)
        assert self.metadata is not None
        self._commit(self.metadata, self.transfers.with_move(done))
        self._apply_topic(key[0])
        logger.info(
            "move of %s/%d from broker %d completed at offset %s; serving it",
            *(key[0], key[1], move.source, move.final_offset),
        )
        self._changed()
        return done

    def cancel_move(self, topic: str, partition: int) -> None:
        """Drop a move that has not switched, and its copy."""
        transfers = moves.cancel(self.transfers, (topic, partition))
        assert self.metadata is not None
        self._commit(self.metadata, transfers)
        self._apply_topic(topic)
        logger.info("move of %s/%d cancelled", topic, partition)
        self._changed()

    # --- moves away from this broker ------------------------------------------------------

    def fence(self, topic: str, partition: int, epoch: int, owner: int) -> PartitionLog:
        """Stop taking writes for the partition: it is placed on ``owner`` at topic epoch
        ``epoch`` and its log retired here. Returns that (sealed) log, whose end, once
        flushed, is final."""
        broker_id = self._own_id()
        key = (topic, partition)
        metadata, transfers = moves.fence(
            self.metadata, self.transfers, broker_id, key, epoch, owner
        )
        if metadata is not self.metadata:
            self._commit(metadata, transfers)
            self._apply_topic(topic)
            logger.info(
                "partition %d of %s fenced at epoch %d: broker %d takes it over",
                *(partition, topic, epoch, owner),
            )
            self._changed()
        return self._logs.held_log(topic, partition)

    def release(self, topic: str, partition: int) -> None:
        """Drop the retired copy of a partition that moved away."""
        owner = self.owner(topic, partition)
        if owner is not None and owner.id == self.broker_id:
            raise errors.MoveConflict(
                f"partition {partition} of {topic!r} is served by this broker: move it first"
            )
        transfers = moves.release(self.transfers, (topic, partition))
        assert self.metadata is not None
        self._commit(self.metadata, transfers)
        self._apply_topic(topic)
        logger.info("retired copy of %s/%d released", topic, partition)
        self._changed()

    def copy_source(self, topic: str, partition: int) -> PartitionLog:
        """The log another broker copies the partition from: served or retired here."""
        if (topic, partition) in self.transfers.retired:
            return self._logs.held_log(topic, partition)
        owner = self.owner(topic, partition)
        moving = self.transfers.moves.get((topic, partition))
        if (owner is None or owner.id == self.broker_id) and (moving is None or not moving.held):
            return self._logs.log(topic, partition)
        raise errors.UnknownPartition(
            f"partition {partition} of {topic!r} is neither served nor retired here"
        )

    def broker_url(self, broker_id: int) -> str:
        found = None if self.metadata is None else self.metadata.broker(broker_id)
        if found is None:
            raise errors.InvalidPlacement(f"broker {broker_id} is not in the cluster")
        return found.url

    def _own_id(self) -> int:
        if self.broker_id is None:
            raise errors.InvalidPlacement(
                "this broker has no id: start it with --broker-id (or --broker-id-from-hostname) "
                "before pushing cluster metadata to it"
            )
        return self.broker_id

    # --- routing --------------------------------------------------------------------------

    def owner(self, topic: str, partition: int) -> BrokerInfo | None:
        """The broker that serves the partition, if the metadata places it."""
        return None if self.metadata is None else self.metadata.owner(topic, partition)

    def local_partitions(self, topic: str) -> list[int] | None:
        """The partitions of a placed topic served here; None when every partition the logs
        know is (standalone, or a topic no push has named)."""
        placement = None if self.metadata is None else self.metadata.topics.get(topic)
        if placement is None:
            return None
        hosted = placement.hosted_by(self.broker_id)
        return sorted(p for p in hosted if not self.transfers.moving(topic, p))

    def check_local(self, topic: str, partition: int) -> None:
        """Raise NotLeader, naming the right broker, for a partition placed on another, and
        PartitionMoving for one placed here whose copy is still being completed."""
        owner = self.owner(topic, partition)
        if owner is not None and owner.id != self.broker_id:
            raise errors.NotLeader(
                f"partition {partition} of topic {topic!r} is served by broker {owner.id} "
                f"at {owner.url}",
                owner.address(),
            )
        if self.transfers.moving(topic, partition):
            raise errors.PartitionMoving(
                f"partition {partition} of topic {topic!r} is moving onto this broker: the "
                "last of its log is being copied; try again shortly"
            )

    def check_coordinator(self, group_id: str) -> None:
        """Raise NotCoordinator, naming the right broker, for a group coordinated elsewhere,
        and CoordinatorNotAvailable while no broker can coordinate it (the group-offsets
        topic is not placed yet, or the group's partition of it is moving onto this broker)."""
        if self.metadata is None:
            return
        partition = self.metadata.group_partition(group_id)
        coordinator = None if partition is None else self.owner(GROUP_OFFSETS_TOPIC, partition)
        if partition is None or coordinator is None:
            raise errors.CoordinatorNotAvailable(
                f"no broker coordinates group {group_id!r} yet: the cluster's group-offsets "
                "topic is not placed (the operator places it); try again shortly"
            )
        if coordinator.id != self.broker_id:
            raise errors.NotCoordinator(
                f"group {group_id!r} is coordinated by broker {coordinator.id} "
                f"at {coordinator.url}",
                coordinator.address(),
            )
        if self.transfers.moving(GROUP_OFFSETS_TOPIC, partition):
            raise errors.CoordinatorNotAvailable(
                f"group {group_id!r} is moving onto this broker with its offsets; try again shortly"
            )
