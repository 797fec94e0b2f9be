"""Python client for Millstream: producer, consumer and admin, async and sync.

The public surface is what this module exports; the modules behind it are private. Async
clients are for code that runs an event loop, the ``Sync*`` wrappers for plain scripts::

    async with Producer("http://127.0.0.1:9092") as producer:
        await producer.send("orders", b"hello", key=b"alice")

    with SyncConsumer("http://127.0.0.1:9092", auto_offset_reset="earliest") as consumer:
        consumer.assign([("orders", 0)])
        for record in consumer:
            print(record.offset, record.value)

    # Members of one group share the topics' partitions; positions are committed as they go.
    with SyncConsumer("http://127.0.0.1:9092", group_id="billing") as consumer:
        consumer.subscribe(["orders"])
        for record in consumer:
            handle(record)

Errors are the classes of :mod:`millstream.errors`, whichever side raised them.
"""

from millstream.client.admin import Admin
from millstream.client.consumer import Consumer
from millstream.client.delivery import RecordFuture, RecordsFuture
from millstream.client.models import (
    DEFAULT_URL,
    ConsumerRecord,
    GroupDescription,
    GroupMetadata,
    GroupPartitionOffset,
    GroupSummary,
    MemberDescription,
    OffsetAndMetadata,
    PartitionInfo,
    ProducerRecord,
    RecordMetadata,
    TopicDescription,
    TopicMetadata,
    TopicPartition,
    TopicSummary,
)
from millstream.client.producer import Producer
from millstream.client.sync import (
    SyncAdmin,
    SyncConsumer,
    SyncProducer,
    SyncRecordFuture,
    SyncRecordsFuture,
)

__all__ = [
    "DEFAULT_URL",
    "Admin",
    "Consumer",
    "ConsumerRecord",
    "GroupDescription",
    "GroupMetadata",
    "GroupPartitionOffset",
    "GroupSummary",
    "MemberDescription",
    "OffsetAndMetadata",
    "PartitionInfo",
    "Producer",
    "ProducerRecord",
    "RecordFuture",
    "RecordMetadata",
    "RecordsFuture",
    "SyncAdmin",
    "SyncConsumer",
    "SyncProducer",
    "SyncRecordFuture",
    "SyncRecordsFuture",
    "TopicDescription",
    "TopicMetadata",
    "TopicPartition",
    "TopicSummary",
]
