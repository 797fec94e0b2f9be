"""Fetch routes: read a partition by offset (JSON, raw batches or a stream); look offsets up.

One handler serves the three representations of ``GET .../records`` by Accept header:
JSON by default (long-polling up to ``wait_ms``), raw RecordBatch v2 bytes for clients that
decode themselves (the log's bytes, untouched), and NDJSON or server-sent events that follow
the log as it grows until the client goes away, ``max_records`` is reached or the broker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from millstream import errors
from millstream.broker.http.json_records import render_record
from millstream.broker.http.keys import METRICS, SETTINGS, STOPPING
from millstream.broker.http.params import (
    INT64_MAX,
    int_param,
    parse_int,
    partition_param,
    wants,
)
from millstream.broker.http.produce import BATCH_MEDIA_TYPE
from millstream.broker.http.routing import local_log
from millstream.broker.storage.partition_log import PartitionLog
from millstream.records import Record, decode_batch, iter_batches

logger = logging.getLogger(__name__)
routes = web.RouteTableDef()

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
NEXT_OFFSET_HEADER = "Millstream-Next-Offset"
HIGH_WATERMARK_HEADER = "Millstream-High-Watermark"
MAX_FETCH_BYTES = 64 * 1024 * 1024
MAX_FETCH_RECORDS = 1_000_000


def _records_from(data: bytes, offset: int) -> Iterator[Record]:
    for info in iter_batches(data):
        for record in decode_batch(data, info.position):
            if record.offset >= offset:
                yield record


async def read_when_ready(
    request: web.Request, log: PartitionLog, offset: int, max_bytes: int, wait_ms: int
) -> bytes:
    data = log.read(offset, max_bytes)
    stopping = request.app[STOPPING]
    if not data and wait_ms > 0 and not stopping.is_set():
        # Whichever comes first: new data, the deadline, or the broker shutting down.
        waiters = {
            asyncio.ensure_future(log.wait_for_data(offset, wait_ms / 1000)),
            asyncio.ensure_future(stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        data = log.read(offset, max_bytes)
    return data


@routes.get("/v1/topics/{topic}/partitions/{partition}/records")
async def fetch_records(request: web.Request) -> web.StreamResponse:
    topic = request.match_info["topic"]
    log = local_log(request, topic, partition_param(request))
    settings = request.app[SETTINGS]
    offset = int_param(request, "offset", log.log_start_offset, minimum=0)
    max_bytes = int_param(
        request, "max_bytes", settings.default_fetch_bytes, minimum=1, maximum=MAX_FETCH_BYTES
    )
    max_records = int_param(request, "max_records", 500, minimum=1, maximum=MAX_FETCH_RECORDS)
    wait_ms = int_param(request, "wait_ms", 0, minimum=0, maximum=settings.max_wait_ms)
    base64_only = _base64_only(request)
    if wants(request, NDJSON) or wants(request, SSE) or _follow(request):
        # Same bounds as above; without max_records a stream follows the log for good (0).
        limit = int_param(request, "max_records", 0, minimum=1, maximum=MAX_FETCH_RECORDS)
        return await _stream(request, log, offset, max_bytes, limit, base64_only)

    data = await read_when_ready(request, log, offset, max_bytes, wait_ms)
    if wants(request, BATCH_MEDIA_TYPE):
        next_offset = offset
        for info in iter_batches(data):
            next_offset = info.last_offset + 1
        request.app[METRICS].records_out(topic, next_offset - offset, len(data))
        headers = {
            NEXT_OFFSET_HEADER: str(next_offset),
            HIGH_WATERMARK_HEADER: str(log.high_watermark),
        }
        return web.Response(body=data, content_type=BATCH_MEDIA_TYPE, headers=headers)

    rendered: list[dict[str, Any]] = []
    next_offset = offset
    for record in _records_from(data, offset):
        if len(rendered) == max_records:
            break
        rendered.append(render_record(record, base64_only))
        next_offset = record.offset + 1
    request.app[METRICS].records_out(topic, len(rendered), len(data))
    return web.json_response(
        {"records": rendered, "next_offset": next_offset, "high_watermark": log.high_watermark}
    )


def _follow(request: web.Request) -> bool:
    """Raw batches follow the log as one response when asked to (``follow=true``)."""
    follow = request.query.get("follow", "false")
    if follow not in ("true", "false"):
        raise errors.InvalidRequest(f"follow must be true or false, got {follow!r}")
    return follow == "true" and wants(request, BATCH_MEDIA_TYPE)


def _base64_only(request: web.Request) -> bool:
    encoding = request.query.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise errors.InvalidRequest(f"encoding must be auto or base64, got {encoding!r}")
    return encoding == "base64"


async def _stream(
    request: web.Request,
    log: PartitionLog,
    offset: int,
    max_bytes: int,
    limit: int,
    base64_only: bool,
) -> web.StreamResponse:
    # Check the offset now, while a clean 416 can still be sent instead of a broken stream.
    log.read(offset, 1)
    sse = wants(request, SSE)
    raw = not sse and not wants(request, NDJSON)
    content_type = BATCH_MEDIA_TYPE if raw else SSE if sse else NDJSON
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    stopping = request.app[STOPPING]
    topic = request.match_info["topic"]
    sent = 0
    try:
        # A deleted topic's log is closed and would answer "no data" at once, for ever; a
        # sealed one moved to another broker and gets nothing more here.
        while (
            not stopping.is_set()
            and not log.closed
            and not log.sealed
            and (limit == 0 or sent < limit)
            and _connected(request)
        ):
            data = await read_when_ready(request, log, offset, max_bytes, wait_ms=1_000)
            if not data:
                if sse:  # a comment line keeps proxies from closing an idle stream
                    await response.write(b": idle\n\n")
                continue
            if raw:  # whole batches as stored: self-delimiting, the client splits them
                chunk, offset, count = _whole_batches(data, offset, limit - sent if limit else 0)
                sent += count
                request.app[METRICS].records_out(topic, count, len(chunk))
                await response.write(chunk)
                continue
            lines = []
            for record in _records_from(data, offset):
                if limit and sent == limit:
                    break
                line = json.dumps(render_record(record, base64_only))
                lines.append(f"id: {record.offset}\ndata: {line}\n\n" if sse else line + "\n")
                offset = record.offset + 1
                sent += 1
            request.app[METRICS].records_out(topic, len(lines), len(data))
            await response.write("".join(lines).encode())
    except ConnectionResetError:
        return response  # the client went away; there is nothing left to finish
    except errors.MillstreamError as exc:
        # The 200 is sent, so no error status can follow: end the stream instead, and the
        # client's next request gets the status (say 416, once retention passed its offset).
        logger.info("ending a stream of %s at offset %d: %s", log.name, offset, exc.message)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _whole_batches(data: bytes, offset: int, limit: int) -> tuple[bytes, int, int]:
    """The batches of ``data`` to send on a raw stream (up to ``limit`` records if set), the
    offset after them, and how many records at or after ``offset`` they hold."""
    end, next_offset, count = 0, offset, 0
    for info in iter_batches(data):
        end = info.position + info.size
        count += info.last_offset + 1 - max(offset, info.base_offset)
        next_offset = info.last_offset + 1
        if limit and count >= limit:
            break
    return data[:end], next_offset, count


def _connected(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


@routes.get("/v1/topics/{topic}/partitions/{partition}/offsets")
async def lookup_offset(request: web.Request) -> web.Response:
    log = local_log(request, request.match_info["topic"], partition_param(request))
    at = request.query.get("at", "latest")
    if at == "earliest":
        offset = log.log_start_offset
    elif at == "latest":
        offset = log.high_watermark
    elif at.isascii() and at.isdigit():
        offset = log.offset_for_timestamp(parse_int("at", at, minimum=0, maximum=INT64_MAX))
    else:
        raise errors.InvalidRequest(
            f"at must be earliest, latest or a timestamp in epoch ms, got {at!r}"
        )
    return web.json_response({"partition": log.partition, "offset": offset})
