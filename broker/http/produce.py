"""Produce routes: JSON records for people, raw RecordBatch v2 bytes for speed.

Both end in ``PartitionLog.append``. The JSON route assigns partitions (Kafka's murmur2 for
keys, a sticky partition otherwise), builds one batch per partition and appends them
concurrently, so the request costs one group-committed fsync per partition. Everything is
checked before anything is written; a request is refused whole. In a cluster, the sticky
partition is one served here, and a record whose key or partition belongs to another broker
refuses the request with ``not_leader`` naming that broker (clients route by key themselves).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from aiohttp import web

from millstream import errors
from millstream.broker.http.json_records import IncomingRecord, parse_produce_body
from millstream.broker.http.keys import CLUSTER, LOGS, METRICS, PARTITIONER
from millstream.broker.http.params import (
    acks_param,
    check_user_topic,
    json_body,
    partition_param,
)
from millstream.broker.http.routing import local_log
from millstream.partitioner import partition_for_key
from millstream.records import BatchBuilder, check_batch, check_batches

routes = web.RouteTableDef()

BATCH_MEDIA_TYPE = "application/vnd.kafka.record-batch"
_BATCH_MEDIA_TYPES = (BATCH_MEDIA_TYPE, "application/octet-stream")


@routes.post("/v1/topics/{topic}/records")
async def produce_records(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    check_user_topic(topic, "produce to")
    logs = request.app[LOGS]
    partitions = logs.topic(topic).partitions
    durable = acks_param(request)
    incoming = parse_produce_body(await json_body(request))

    sticky = request.app[PARTITIONER]
    cluster = request.app[CLUSTER]
    local = cluster.local_partitions(topic)

    def pick(topic: str, partitions: int) -> int:
        if local:  # in a cluster, keyless records stick to a partition served here
            return local[sticky.partition(topic, len(local))]
        return sticky.partition(topic, partitions)

    chosen = [_choose_partition(r, topic, partitions, pick) for r in incoming]
    by_partition: dict[int, list[int]] = defaultdict(list)
    for index, partition in enumerate(chosen):
        by_partition[partition].append(index)
    for partition in sorted(by_partition):
        cluster.check_local(topic, partition)
    if any(r.key is None and r.partition is None for r in incoming):
        sticky.next_batch(topic, len(local) if local else partitions)

    builds = {p: _build(incoming, indexes) for p, indexes in by_partition.items()}
    # Check sizes against every partition's limit before the first byte is written.
    limit = logs.topic(topic).config.max_message_bytes
    for batch in builds.values():
        if len(batch) > limit:
            raise errors.RecordTooLarge(
                f"records for one partition make a {len(batch)}-byte batch; "
                f"the topic's max.message.bytes is {limit}"
            )

    async def append(partition: int, batch: bytes) -> tuple[int, int]:
        # Asked again: the partition may have moved away since the check above (a fence).
        log = local_log(request, topic, partition)
        first, _last = await log.append(
            batch, [check_batch(batch, deep=False)], wait_durable=durable
        )
        return partition, first

    results = await asyncio.gather(*(append(p, b) for p, b in builds.items()))
    base = dict(results)
    offsets: list[dict[str, int]] = [{} for _ in incoming]
    for partition, indexes in by_partition.items():
        for delta, index in enumerate(indexes):
            offsets[index] = {"partition": partition, "offset": base[partition] + delta}
    request.app[METRICS].records_in(topic, len(incoming), sum(map(len, builds.values())))
    return web.json_response({"offsets": offsets})


def _choose_partition(
    record: IncomingRecord, topic: str, partitions: int, sticky: Callable[[str, int], int]
) -> int:
    if record.partition is not None:
        if record.partition >= partitions:
            raise errors.UnknownPartition(
                f"topic {topic!r} has partitions 0..{partitions - 1}, not {record.partition}"
            )
        return record.partition
    if record.key is not None:
        return partition_for_key(record.key, partitions)
    return sticky(topic, partitions)


def _build(incoming: list[IncomingRecord], indexes: list[int]) -> bytes:
    builder = BatchBuilder()
    for index in indexes:
        r = incoming[index]
        builder.append(r.value, r.key, r.timestamp, r.headers)
    return builder.build()


@routes.post("/v1/topics/{topic}/partitions/{partition}/batches")
async def produce_batches(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    check_user_topic(topic, "produce to")
    log = local_log(request, topic, partition_param(request))
    if request.content_type not in _BATCH_MEDIA_TYPES:
        raise errors.UnsupportedMediaType(
            f"send raw record batches as {BATCH_MEDIA_TYPE}, not {request.content_type!r}"
        )
    durable = acks_param(request)
    body = await request.read()
    infos = check_batches(body)
    # Asked again after reading the body: the partition may have moved away meanwhile. (The
    # log also refuses appends once it is sealed, which covers any other interleaving.)
    log = local_log(request, topic, log.partition)
    first, last = await log.append(body, infos, wait_durable=durable)
    request.app[METRICS].records_in(topic, last - first + 1, len(body))
    return web.json_response(
        {"partition": log.partition, "base_offset": first, "last_offset": last}
    )
