"""The partitions a broker holds, over the admin API: what a move's receiver and the operator
ask of the broker a partition moves *from*.

- ``GET /v1/admin/partitions``: every partition with a log here and its role (``serving``,
  ``receiving``: a move's copy, ``retired``: moved away, kept until released) and offsets;
  the operator drains a broker until none is serving or receiving.
- ``GET /v1/admin/partitions/{topic}/{partition}/records`` ``?offset&max_bytes&wait_ms``: raw
  batches exactly as stored (offsets included), from a served or retired copy; headers give
  the log start, the high watermark and the next offset. A move's receiver copies with it.
- ``POST /v1/admin/partitions/{topic}/{partition}/fence`` ``{"epoch", "owner"}``: stop taking
  writes for the partition (placed on broker ``owner`` at topic ``epoch``, retired here),
  wait for the writes already made to be durable and answer the final log end. Called by the
  receiver when a push switches a move; idempotent.
- ``DELETE /v1/admin/partitions/{topic}/{partition}``: drop the retired copy (the receiver
  does once it serves the partition; the operator may, to clean up).

Admin routes: the token is checked before anything is read.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from millstream.broker.http.admin import MAX_BROKER_ID
from millstream.broker.http.fetch import (
    HIGH_WATERMARK_HEADER,
    MAX_FETCH_BYTES,
    NEXT_OFFSET_HEADER,
    read_when_ready,
)
from millstream.broker.http.keys import ADMIN_AUTH, CLUSTER, LOGS, SETTINGS
from millstream.broker.http.params import (
    INT64_MAX,
    body_int,
    int_param,
    json_body,
    object_body,
    partition_param,
)
from millstream.broker.http.produce import BATCH_MEDIA_TYPE
from millstream.broker.storage.partition_log import PartitionLog
from millstream.records import iter_batches

routes = web.RouteTableDef()

LOG_START_HEADER = "Millstream-Log-Start-Offset"
PARTITION_PATH = "/v1/admin/partitions/{topic}/{partition}"


@routes.get("/v1/admin/partitions")
async def list_partitions(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    logs, cluster = request.app[LOGS], request.app[CLUSTER]
    rows = [_row(log, "serving") for name in logs.topic_names() for log in logs.topic_logs(name)]
    for log in logs.held_logs():
        moving = (log.topic, log.partition) in cluster.transfers.moves
        rows.append(_row(log, "receiving" if moving else "retired"))
    rows.sort(key=lambda r: (r["topic"], r["partition"]))
    return web.json_response({"broker_id": cluster.broker_id, "partitions": rows})


def _row(log: PartitionLog, role: str) -> dict[str, Any]:
    return {
        "topic": log.topic,
        "partition": log.partition,
        "role": role,
        "log_start_offset": log.log_start_offset,
        "log_end_offset": log.high_watermark,
        "size_bytes": log.size_bytes,
    }


@routes.get(PARTITION_PATH + "/records")
async def read_copy(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    log = request.app[CLUSTER].copy_source(request.match_info["topic"], partition_param(request))
    settings = request.app[SETTINGS]
    offset = int_param(request, "offset", log.log_start_offset, minimum=0)
    max_bytes = int_param(
        request, "max_bytes", settings.default_fetch_bytes, minimum=1, maximum=MAX_FETCH_BYTES
    )
    wait_ms = int_param(request, "wait_ms", 0, minimum=0, maximum=settings.max_wait_ms)
    durable_end = None
    if log.config.flush_ms > 0:
        # The high watermark is then the written end: a crash of this broker could take back
        # what a copy already holds and reuse its offsets. Copy only what is on disk.
        durable_end = log.log_end_offset
        await log.flush()
    data = await read_when_ready(request, log, offset, max_bytes, wait_ms)
    next_offset, end = offset, 0
    for info in iter_batches(data):
        if durable_end is not None and info.last_offset >= durable_end:
            break
        next_offset, end = info.last_offset + 1, info.position + info.size
    data = data[:end]
    headers = {
        LOG_START_HEADER: str(log.log_start_offset),
        HIGH_WATERMARK_HEADER: str(log.high_watermark),
        NEXT_OFFSET_HEADER: str(next_offset),
    }
    return web.Response(body=data, content_type=BATCH_MEDIA_TYPE, headers=headers)


@routes.post(PARTITION_PATH + "/fence")
async def fence(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    topic, partition = request.match_info["topic"], partition_param(request)
    body = object_body(await json_body(request), {"epoch", "owner"})
    epoch = body_int(body.get("epoch"), '"epoch"', INT64_MAX)
    owner = body_int(body.get("owner"), '"owner"', MAX_BROKER_ID)
    log = request.app[CLUSTER].fence(topic, partition, epoch, owner)
    await log.flush()  # appends written before the fence: durable, then the end is final
    return web.json_response(
        {
            "topic": topic,
            "partition": partition,
            "owner": owner,
            "epoch": epoch,
            "log_end_offset": log.log_end_offset,
        }
    )


@routes.delete(PARTITION_PATH)
async def release(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    request.app[CLUSTER].release(request.match_info["topic"], partition_param(request))
    return web.Response(status=204)
