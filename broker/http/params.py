"""Reading path and query parameters and JSON bodies, with the error codes users rely on.

Used by every handler so that ``?offset=abc`` or a body that is not JSON is refused the same
way everywhere.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from millstream import errors


def int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An integer from the path or the query string, within [minimum, maximum]."""
    raw = request.match_info.get(name, request.query.get(name))
    if raw is None or raw == "":
        if default is None:
            raise errors.InvalidRequest(f"parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidRequest(f"parameter {name!r} must be an integer, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise errors.InvalidRequest(f"parameter {name!r} must be {bounds}, got {value}")
    return value


def partition_param(request: web.Request) -> int:
    raw = request.match_info["partition"]
    if not raw.isdigit():
        raise errors.UnknownPartition(f"partition must be a non-negative integer, got {raw!r}")
    return int(raw)


def acks_param(request: web.Request) -> bool:
    """Whether the produce waits for durability: acks=all (default) does; 1 and 0 do not."""
    acks = request.query.get("acks", "all")
    if acks not in ("all", "-1", "1", "0"):
        raise errors.InvalidRequest(f"acks must be all, 1 or 0, got {acks!r}")
    return acks in ("all", "-1")


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise errors.MalformedJson("request body is empty; expected JSON")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.MalformedJson(f"request body is not valid JSON: {exc}") from None


def wants(request: web.Request, media_type: str) -> bool:
    """Whether the Accept header names ``media_type`` (no q-value ranking: types here are exact)."""
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == media_type for part in accept.split(","))
