"""Durable partition logs on local disk. Knows nothing of HTTP or Kubernetes.

Layout of a data directory::

    <data>/topics/<topic>/topic.json              name, partition count, config, the
                                                  partitions hosted here and those held
                                                  without being served (atomic rewrite)
    <data>/topics/<topic>/<partition>/<base>.log        RecordBatch v2 bytes, as received
    <data>/topics/<topic>/<partition>/<base>.index      sparse offset index
    <data>/topics/<topic>/<partition>/<base>.timeindex  sparse time index
    <data>/topics/<topic>/<partition>/recovery-point    where checking starts after a crash
    <data>/staging/, <data>/trash/                topics being created / deleted

``<base>`` is the segment's first offset, zero-padded to 20 digits as in Kafka. Each module
documents its own file format: ``segment``, ``offset_index``, ``time_index``, ``recovery``
(the recovery point), ``topic_file`` (topic.json) and ``log_manager`` (staging and trash;
topics that host a subset of their partitions, as brokers of a cluster do).

The public surface, used by ``millstream.broker.http``:

- :class:`~millstream.broker.storage.log_manager.LogManager` owns the directory: topics,
  their partition logs, recovery at open and retention.
- :class:`~millstream.broker.storage.partition_log.PartitionLog` is one partition: append
  checked batches (offsets assigned, acknowledged once durable) or copied ones (offsets kept,
  following on), read batches by offset, wait for new data, look offsets up by time.
- :class:`~millstream.broker.storage.config.TopicConfig` holds per-topic settings.

Everything here runs on the event loop's thread and is not thread-safe; only fsync and
file removal are handed to worker threads so the loop keeps serving while the disk works.
"""

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager, TopicInfo
from millstream.broker.storage.partition_log import PartitionLog

__all__ = ["LogManager", "PartitionLog", "TopicConfig", "TopicInfo"]
