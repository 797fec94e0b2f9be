"""Routes under ``/v1/groups``: membership (join, sync, heartbeat, leave), offsets, admin.

Thin: each handler parses and checks its body, calls the
:class:`~millstream.broker.groups.coordinator.GroupCoordinator` and renders the answer. The
contract is written up in ``docs/consumer-groups.md`` and in the OpenAPI document.

In a cluster, a group's calls go to its coordinator (others answer ``not_coordinator``), which
may keep offsets for partitions served elsewhere: for those, describe asks their brokers for
the log end (lag), and a reset to earliest, latest or a time asks them for the offsets
(:mod:`~millstream.broker.http.peers`).
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from millstream import errors
from millstream.broker.groups.coordinator import OffsetEntry, check_group_id
from millstream.broker.groups.group import JoinRequest, JoinResult
from millstream.broker.groups.resets import (
    RESET_TARGETS,
    ResetTarget,
    check_timestamp,
    offset_at,
    reset_partitions,
)
from millstream.broker.http.json_records import decode_base64
from millstream.broker.http.keys import CLUSTER, GROUPS, LOGS, PEERS
from millstream.broker.http.params import INT64_MAX, json_body, object_body
from millstream.broker.http.routing import check_coordinator

routes = web.RouteTableDef()

DEFAULT_SESSION_TIMEOUT_MS = 10_000
_MAX_PROTOCOLS = 32
MAX_OFFSETS_PER_REQUEST = 100_000


# --- body fields ----------------------------------------------------------------------------


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    return object_body(await json_body(request), allowed)


# An optional field may be null, read as absent, as everywhere in this API.


def _str(body: dict[str, Any], name: str, default: str | None = None, limit: int = 1024) -> str:
    value = body.get(name)
    if value is None:
        value = default
    if value is None:
        raise errors.InvalidRequest(f'"{name}" is required')
    if not isinstance(value, str) or len(value) > limit:
        raise errors.InvalidRequest(f'"{name}" must be a string of at most {limit} characters')
    return value


def _int(
    body: dict[str, Any],
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int = INT64_MAX,
) -> int:
    value = body.get(name)
    if value is None:
        value = default
    if value is None:
        raise errors.InvalidRequest(f'"{name}" is required')
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise errors.InvalidRequest(f'"{name}" must be an integer from {minimum} to {maximum}')
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _list(body: dict[str, Any], name: str, limit: int) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not 1 <= len(value) <= limit:
        raise errors.InvalidRequest(f'"{name}" must be an array of 1 to {limit} items')
    return value


def _object(item: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise errors.InvalidRequest(f"{where} must be an object")
    unknown = set(item) - allowed
    if unknown:
        raise errors.InvalidRequest(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    return item


def _group_id(request: web.Request) -> str:
    """The group of the path, if this broker coordinates it."""
    group_id = request.match_info["group"]
    check_group_id(group_id)
    return check_coordinator(request, group_id)


# --- membership -----------------------------------------------------------------------------


@routes.post("/v1/groups/{group}/join")
async def join(request: web.Request) -> web.Response:
    body = await _body(
        request,
        {
            "member_id",
            "client_id",
            "group_instance_id",
            "session_timeout_ms",
            "rebalance_timeout_ms",
            "protocol_type",
            "protocols",
        },
    )
    instance_id = body.get("group_instance_id")
    if instance_id is not None:
        instance_id = _str(body, "group_instance_id", limit=249)
        if not instance_id:
            raise errors.InvalidRequest('"group_instance_id" must not be empty')
    session_ms = _int(body, "session_timeout_ms", DEFAULT_SESSION_TIMEOUT_MS)
    protocols = []
    for i, item in enumerate(_list(body, "protocols", _MAX_PROTOCOLS)):
        where = f"protocols[{i}]"
        item = _object(item, where, {"name", "metadata_base64"})
        name = _str(item, "name", limit=255)
        protocols.append(
            (name, decode_base64(item.get("metadata_base64", ""), f"{where}.metadata_base64"))
        )
    if len({name for name, _ in protocols}) != len(protocols):
        raise errors.InvalidRequest("protocol names must be distinct")
    join_request = JoinRequest(
        member_id=_str(body, "member_id", ""),
        client_id=_str(body, "client_id", "", limit=255),
        client_host=request.remote or "",
        session_timeout_s=session_ms / 1000,
        rebalance_timeout_s=_int(body, "rebalance_timeout_ms", session_ms) / 1000,
        protocol_type=_str(body, "protocol_type", limit=255),
        protocols=tuple(protocols),
        group_instance_id=instance_id,
    )
    result = await request.app[GROUPS].join(_group_id(request), join_request)
    return web.json_response(_render_join(result))


def _render_join(result: JoinResult) -> dict[str, Any]:
    return {
        "member_id": result.member_id,
        "generation": result.generation,
        "protocol_type": result.protocol_type,
        "protocol": result.protocol,
        "leader": result.leader,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "metadata_base64": _b64(m.metadata),
            }
            for m in result.members
        ],
    }


@routes.post("/v1/groups/{group}/sync")
async def sync(request: web.Request) -> web.Response:
    body = await _body(request, {"member_id", "generation", "assignments"})
    assignments = None
    if body.get("assignments") is not None:
        assignments = {}
        raw = body["assignments"]
        if not isinstance(raw, list):
            raise errors.InvalidRequest('"assignments" must be an array')
        for i, item in enumerate(raw):
            where = f"assignments[{i}]"
            item = _object(item, where, {"member_id", "assignment_base64"})
            assignments[_str(item, "member_id")] = decode_base64(
                item.get("assignment_base64"), f"{where}.assignment_base64"
            )
    result = await request.app[GROUPS].sync(
        _group_id(request),
        _str(body, "member_id"),
        _int(body, "generation", maximum=2**31 - 1),
        assignments,
    )
    return web.json_response(
        {
            "protocol_type": result.protocol_type,
            "protocol": result.protocol,
            "assignment_base64": _b64(result.assignment),
        }
    )


@routes.post("/v1/groups/{group}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    body = await _body(request, {"member_id", "generation"})
    request.app[GROUPS].heartbeat(
        _group_id(request), _str(body, "member_id"), _int(body, "generation", maximum=2**31 - 1)
    )
    return web.Response(status=204)


@routes.post("/v1/groups/{group}/leave")
async def leave(request: web.Request) -> web.Response:
    body = await _body(request, {"member_id"})
    request.app[GROUPS].leave(_group_id(request), _str(body, "member_id"))
    return web.Response(status=204)


# --- offsets --------------------------------------------------------------------------------


def _offset_entries(body: dict[str, Any], with_metadata: bool) -> list[OffsetEntry]:
    entries = []
    allowed = (
        {"topic", "partition", "offset", "metadata"}
        if with_metadata
        else {"topic", "partition", "offset"}
    )
    for i, item in enumerate(_list(body, "offsets", MAX_OFFSETS_PER_REQUEST)):
        item = _object(item, f"offsets[{i}]", allowed)
        entries.append(
            OffsetEntry(
                _str(item, "topic", limit=249),
                _int(item, "partition", maximum=2**31 - 1),
                _int(item, "offset"),
                _str(item, "metadata", "", limit=4096) if with_metadata else "",
            )
        )
    return entries


@routes.post("/v1/groups/{group}/offsets")
async def commit_offsets(request: web.Request) -> web.Response:
    body = await _body(request, {"member_id", "generation", "offsets"})
    await request.app[GROUPS].commit(
        _group_id(request),
        _str(body, "member_id", ""),
        _int(body, "generation", -1, minimum=-1, maximum=2**31 - 1),
        _offset_entries(body, with_metadata=True),
    )
    return web.Response(status=204)


@routes.get("/v1/groups/{group}/offsets")
async def fetch_offsets(request: web.Request) -> web.Response:
    topics = request.query.getall("topic", None)
    committed = request.app[GROUPS].committed(_group_id(request), topics)
    offsets = [
        {"topic": t, "partition": p, "offset": c.offset, "metadata": c.metadata}
        for (t, p), c in committed.items()
    ]
    return web.json_response({"offsets": offsets})


@routes.post("/v1/groups/{group}/offsets/reset")
async def reset_offsets(request: web.Request) -> web.Response:
    body = await _body(request, {"to", "topics", "timestamp", "offsets", "dry_run"})
    to = body.get("to")
    if to not in RESET_TARGETS:
        raise errors.InvalidRequest(f'"to" must be one of {", ".join(RESET_TARGETS)}')
    topics = body.get("topics")
    if topics is not None and (
        not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)
    ):
        raise errors.InvalidRequest('"topics" must be an array of topic names')
    dry_run = body.get("dry_run")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise errors.InvalidRequest('"dry_run" must be true or false')
    timestamp = None if body.get("timestamp") is None else _int(body, "timestamp")
    explicit = _offset_entries(body, with_metadata=False) if body.get("offsets") is not None else []
    group_id, target = _group_id(request), _reset_target(to)
    if request.app[CLUSTER].managed and target != "offsets":
        # Some partitions may be served elsewhere: look every target up here, reset to them.
        explicit = await _cluster_targets(request, group_id, target, topics, timestamp)
        target = "offsets"
    plan = await request.app[GROUPS].reset_offsets(
        group_id,
        target,
        topics=topics,
        timestamp_ms=timestamp,
        offsets=explicit,
        dry_run=bool(dry_run),
    )
    offsets = [{"topic": e.topic, "partition": e.partition, "offset": e.offset} for e in plan]
    return web.json_response({"offsets": offsets, "dry_run": bool(dry_run)})


async def _cluster_targets(
    request: web.Request,
    group_id: str,
    to: ResetTarget,
    topics: list[str] | None,
    timestamp: int | None,
) -> list[OffsetEntry]:
    """The offsets a reset ``to`` earliest, latest or a time means, partitions served here and
    elsewhere alike; BrokerUnavailable if a broker does not answer (nothing is reset)."""
    check_timestamp(to, timestamp)
    logs, cluster = request.app[LOGS], request.app[CLUSTER]
    committed = request.app[GROUPS].committed(group_id)
    targets = reset_partitions(logs, group_id, (t for t, _ in committed), topics)
    at = str(timestamp) if to == "timestamp" else to
    local: dict[tuple[str, int], int] = {}
    remote: list[tuple[str, str, int]] = []  # broker URL, topic, partition
    for topic, partition in targets:
        owner = cluster.owner(topic, partition)
        if owner is None or owner.id == cluster.broker_id:
            cluster.check_local(topic, partition)  # partition_moving while its copy completes
            local[topic, partition] = offset_at(logs.log(topic, partition), to, timestamp)
        else:
            remote.append((owner.url, topic, partition))
    found = await request.app[PEERS].offsets(remote, at)
    for (url, topic, partition), offset in zip(remote, found, strict=True):
        if offset is None:
            raise errors.BrokerUnavailable(
                f"the broker at {url} did not give the offset of {topic}/{partition}; "
                "nothing was reset, try again"
            )
        local[topic, partition] = offset
    return [OffsetEntry(t, p, local[t, p]) for t, p in targets]


def _reset_target(to: str) -> ResetTarget:
    for target in RESET_TARGETS:
        if to == target:
            return target
    raise errors.InvalidRequest(f'"to" must be one of {", ".join(RESET_TARGETS)}')


# --- administration -------------------------------------------------------------------------


@routes.get("/v1/groups")
async def list_groups(request: web.Request) -> web.Response:
    coordinator, cluster = request.app[GROUPS], request.app[CLUSTER]
    answer: dict[str, Any] = {"groups": [coordinator.summary(g) for g in coordinator.group_ids()]}
    if cluster.managed:  # the groups this broker coordinates: clients ask every broker
        answer["broker_id"] = cluster.broker_id
    return web.json_response(answer)


@routes.get("/v1/groups/{group}")
async def describe_group(request: web.Request) -> web.Response:
    description = request.app[GROUPS].describe(_group_id(request))
    await _remote_lag(request, description)
    return web.json_response(description)


async def _remote_lag(request: web.Request, description: dict[str, Any]) -> None:
    """Log ends and lag of the partitions other brokers serve, as they say (null if they do
    not answer within the peer timeout)."""
    cluster = request.app[CLUSTER]
    rows = []
    for row in description["offsets"]:
        owner = cluster.owner(row["topic"], row["partition"])
        if row["log_end_offset"] is None and owner is not None and owner.id != cluster.broker_id:
            rows.append((row, owner.url))
    if not rows:
        return
    ends = await request.app[PEERS].offsets(
        ((u, r["topic"], r["partition"]) for r, u in rows), "latest"
    )
    for (row, _), end in zip(rows, ends, strict=True):
        row["log_end_offset"] = end
        if end is not None and row["committed"] is not None:
            row["lag"] = max(0, end - row["committed"])
    known = [row["lag"] for row in description["offsets"] if row["lag"] is not None]
    description["lag"] = sum(known) if known else None


@routes.delete("/v1/groups/{group}")
async def delete_group(request: web.Request) -> web.Response:
    await request.app[GROUPS].delete(_group_id(request))
    return web.Response(status=204)
