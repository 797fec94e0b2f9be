"""Durable partition logs on local disk. Knows nothing of HTTP or Kubernetes.

Layout of a data directory::

    <data>/topics/<topic>/topic.json              name, partition count, config (atomic rewrite)
    <data>/topics/<topic>/<partition>/<base>.log        RecordBatch v2 bytes, as received
    <data>/topics/<topic>/<partition>/<base>.index      sparse offset index
    <data>/topics/<topic>/<partition>/<base>.timeindex  sparse time index

``<base>`` is the segment's first offset, zero-padded to 20 digits as in Kafka.

The public surface, used by ``millstream.broker.http``:

- :class:`~millstream.broker.storage.log_manager.LogManager` owns the directory: topics,
  their partition logs, recovery at open and retention.
- :class:`~millstream.broker.storage.partition_log.PartitionLog` is one partition: append
  checked batches (offsets assigned, acknowledged once durable), read batches by offset,
  wait for new data, look offsets up by time.
- :class:`~millstream.broker.storage.config.TopicConfig` holds per-topic settings.

Everything here runs on the event loop's thread and is not thread-safe; only fsync and
file removal are handed to worker threads so the loop keeps serving while the disk works.
"""
