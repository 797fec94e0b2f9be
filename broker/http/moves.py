"""Moves of partitions onto this broker, over the admin API: start, watch, throttle, cancel.

Called by the operator on the *receiving* broker of a move (docs/cluster.md, "Moving a
partition"); guarded by the admin token like every ``/v1/admin/`` route:

- ``POST /v1/admin/moves`` ``{"topic", "partition", "source"?, "throttle_bytes_per_s"?}``:
  start copying the partition from the broker serving it (201), or find the move running
  (200, its throttle set to the one given);
- ``GET /v1/admin/moves``, ``GET /v1/admin/moves/{topic}/{partition}``: state and progress;
- ``PATCH /v1/admin/moves/{topic}/{partition}`` ``{"throttle_bytes_per_s"}``: change the pace;
- ``DELETE /v1/admin/moves/{topic}/{partition}``: cancel (the copy is deleted) or, for a
  completed move, forget it.

The switch itself is a topic push (``PUT /v1/admin/topics/{topic}`` with the partition placed
here and a higher epoch); see :mod:`~millstream.broker.cluster.moves` for the state machine and
:mod:`~millstream.broker.cluster.mover` for the copy.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from millstream import errors
from millstream.broker.cluster.moves import Move, MoveState
from millstream.broker.http.admin import MAX_BROKER_ID
from millstream.broker.http.keys import ADMIN_AUTH, CLUSTER, LOGS, MOVER
from millstream.broker.http.params import (
    INT64_MAX,
    body_int,
    json_body,
    object_body,
    partition_param,
)
from millstream.broker.storage.log_manager import MAX_PARTITIONS, check_topic_name
from millstream.records import now_ms

routes = web.RouteTableDef()

MOVE_PATH: Final = "/v1/admin/moves/{topic}/{partition}"


def _throttle(value: Any) -> int | None:
    if value is None:
        return None
    return body_int(value, '"throttle_bytes_per_s"', INT64_MAX, minimum=1)


@routes.post("/v1/admin/moves")
async def start_move(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    body = object_body(
        await json_body(request), {"topic", "partition", "source", "throttle_bytes_per_s"}
    )
    topic = body.get("topic")
    check_topic_name(topic)
    assert isinstance(topic, str)
    partition = body_int(body.get("partition"), '"partition"', MAX_PARTITIONS - 1)
    source = body.get("source")
    if source is not None:
        source = body_int(source, '"source"', MAX_BROKER_ID)
    throttle = _throttle(body.get("throttle_bytes_per_s"))
    move, created = request.app[CLUSTER].start_move(topic, partition, source, throttle, now_ms())
    return web.json_response(render(request, move), status=201 if created else 200)


@routes.get("/v1/admin/moves")
async def list_moves(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    cluster = request.app[CLUSTER]
    moves = [render(request, move) for move in cluster.list_moves()]
    return web.json_response({"broker_id": cluster.broker_id, "moves": moves})


@routes.get(MOVE_PATH)
async def get_move(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    move = request.app[CLUSTER].move(request.match_info["topic"], partition_param(request))
    return web.json_response(render(request, move))


@routes.patch(MOVE_PATH)
async def update_move(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    body = object_body(await json_body(request), {"throttle_bytes_per_s"})
    if "throttle_bytes_per_s" not in body:
        raise errors.InvalidRequest('"throttle_bytes_per_s" is required (null: unthrottled)')
    cluster = request.app[CLUSTER]
    move = cluster.move(request.match_info["topic"], partition_param(request))
    throttle = _throttle(body["throttle_bytes_per_s"])
    if throttle != move.throttle_bytes_per_s:
        move = cluster.update_move(move.key, throttle_bytes_per_s=throttle)
    return web.json_response(render(request, move))


@routes.delete(MOVE_PATH)
async def cancel_move(request: web.Request) -> web.Response:
    request.app[ADMIN_AUTH].check(request)
    await request.app[MOVER].cancel(request.match_info["topic"], partition_param(request))
    return web.Response(status=204)


def render(request: web.Request, move: Move) -> dict[str, Any]:
    """A move as the admin API shows it: the stored state and this process's progress."""
    cluster, logs = request.app[CLUSTER], request.app[LOGS]
    progress = request.app[MOVER].progress(move.key)
    source = None if cluster.metadata is None else cluster.metadata.broker(move.source)
    state = move.state.value
    if move.state is MoveState.COPYING and progress is not None and progress.in_sync:
        state = "in_sync"
    start = end = size = None
    try:
        copy = logs.held_log(*move.key) if move.held else logs.log(*move.key)
        start, end, size = copy.log_start_offset, copy.log_end_offset, copy.size_bytes
    except errors.NotFound:  # a completed move of a partition that moved on since
        pass
    source_end = None if progress is None else progress.source_high_watermark
    return {
        "topic": move.topic,
        "partition": move.partition,
        "source": {"id": move.source, "url": None if source is None else source.url},
        "state": state,
        "throttle_bytes_per_s": move.throttle_bytes_per_s,
        "epoch": move.epoch,
        "final_offset": move.final_offset,
        "log_start_offset": start,
        "log_end_offset": end,
        "size_bytes": size,
        "source_log_start_offset": None if progress is None else progress.source_log_start_offset,
        "source_log_end_offset": source_end,
        "lag": None if source_end is None or end is None else max(0, source_end - end),
        "bytes_copied": 0 if progress is None else progress.bytes_copied,
        "restarts": 0 if progress is None else progress.restarts,
        "retries": 0 if progress is None else progress.retries,
        "error": move.error if progress is None or progress.error is None else progress.error,
        "created_ms": move.created_ms,
        "completed_ms": move.completed_ms,
        "source_released": move.source_released,
    }
