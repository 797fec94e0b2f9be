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

Not thread-safe: used on the event loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from millstream import errors
from millstream.broker.cluster.metadata import (
    BrokerInfo,
    ClusterMetadata,
    TopicPlacement,
    make_cluster,
    with_topic,
    without_topic,
)
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.storage.log_manager import LogManager, check_topic_name

logger = logging.getLogger(__name__)


class ClusterNode:
    def __init__(self, logs: LogManager, store: MetadataStore, broker_id: int | None) -> None:
        self._logs = logs
        self._store = store
        self.broker_id = broker_id
        self.metadata: ClusterMetadata | None = None

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
        self.metadata = stored.metadata
        for topic in stored.metadata.topics.values():
            self._apply(topic)
        logger.info(
            "broker %d of a cluster of %d (epoch %d), %d topic(s) placed",
            *(self.broker_id, len(stored.metadata.brokers), stored.metadata.epoch),
            len(stored.metadata.topics),
        )

    # --- pushes ---------------------------------------------------------------------------

    def put_cluster(self, epoch: int, brokers: Iterable[BrokerInfo]) -> ClusterMetadata:
        broker_id = self._own_id()
        metadata = make_cluster(self.metadata, epoch, brokers)
        self._store.save(broker_id, metadata)
        self.metadata = metadata
        logger.info(
            "cluster epoch %d: brokers %s", epoch, ", ".join(str(b.id) for b in metadata.brokers)
        )
        return metadata

    def put_topic(self, topic: TopicPlacement) -> TopicPlacement:
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
        self._store.save(broker_id, metadata)
        self.metadata = metadata
        self._apply(topic)
        return topic

    def delete_topic(self, name: str) -> None:
        """Forget the topic and delete what this broker holds of it."""
        broker_id = self._own_id()
        placed = self.metadata is not None and name in self.metadata.topics
        local = name in self._logs.topic_names()
        if not placed and not local:
            raise errors.UnknownTopic(f"topic {name!r} does not exist")
        if self.metadata is not None and placed:
            metadata = without_topic(self.metadata, name)
            self._store.save(broker_id, metadata)
            self.metadata = metadata
        if local:
            self._logs.delete_topic(name)

    def _apply(self, topic: TopicPlacement) -> None:
        hosted = topic.hosted_by(self.broker_id)
        self._logs.ensure_topic(topic.name, topic.partitions, topic.config, hosted)

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
        return None if placement is None else sorted(placement.hosted_by(self.broker_id))

    def check_local(self, topic: str, partition: int) -> None:
        """Raise NotLeader, naming the right broker, for a partition placed on another."""
        owner = self.owner(topic, partition)
        if owner is not None and owner.id != self.broker_id:
            raise errors.NotLeader(
                f"partition {partition} of topic {topic!r} is served by broker {owner.id} "
                f"at {owner.url}",
                owner.address(),
            )

    def check_coordinator(self, group_id: str) -> None:
        """Raise NotCoordinator, naming the right broker, for a group coordinated elsewhere."""
        if self.metadata is None:
            return
        coordinator = self.metadata.coordinator(group_id)
        if coordinator.id != self.broker_id:
            raise errors.NotCoordinator(
                f"group {group_id!r} is coordinated by broker {coordinator.id} "
                f"at {coordinator.url}",
                coordinator.address(),
            )
