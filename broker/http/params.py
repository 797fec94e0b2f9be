"""Reading path and query parameters and JSON bodies, with the error codes users rely on.

Used by every handler so that ``?offset=abc`` or a body that is not JSON is refused the same
way everywhere.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Final

from aiohttp import web

from millstream import errors
from millstream.internal_topics import RESERVED_PREFIX, is_internal

# Offsets and timestamps are Kafka int64s; nothing a client sends may be larger.
INT64_MAX: Final = 2**63 - 1
# ASCII digits only: int() also takes "1_000", " 7 " and other scripts' digits.
_INTEGER: Final = re.compile(r"-?[0-9]+")
# Longer than any int64 can be written, so int() never sees a 5,000-digit string.
_MAX_DIGITS: Final = 20


def parse_int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    """``raw`` as a decimal integer within [minimum, maximum], or InvalidRequest."""
    if not _INTEGER.fullmatch(raw):
        raise errors.InvalidRequest(f"parameter {name!r} must be an integer, got {raw!r}")
    if len(raw) > _MAX_DIGITS or not minimum <= int(raw) <= maximum:
        raise errors.InvalidRequest(
            f"parameter {name!r} must be between {minimum} and {maximum}, got {raw}"
        )
    return int(raw)


def int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int = INT64_MAX,
) -> int:
    """An integer from the path or the query string, within [minimum, maximum]."""
    raw = request.match_info.get(name, request.query.get(name))
    if raw is None:  # "?offset=" is no integer either: refused below, as the document says
        if default is None:
            raise errors.InvalidRequest(f"parameter {name!r} is required")
        return default
    return parse_int(name, raw, minimum=minimum, maximum=maximum)


def body_int(value: Any, where: str, maximum: int, minimum: int = 0) -> int:
    """A JSON body's integer field within [minimum, maximum], or InvalidRequest."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise errors.InvalidRequest(f"{where} must be an integer from {minimum} to {maximum}")
    return value


def partition_param(request: web.Request) -> int:
    raw = request.match_info["partition"]
    # Anything but a short run of ASCII digits names no partition (str.isdigit takes "²").
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_DIGITS:
        raise errors.UnknownPartition(f"partition must be a non-negative integer, got {raw!r}")
    return int(raw)


def acks_param(request: web.Request) -> bool:
    """Whether the produce waits for durability: acks=all (default) does; 1 and 0 do not."""
    acks = request.query.get("acks", "all")
    if acks not in ("all", "-1", "1", "0"):
        raise errors.InvalidRequest(f"acks must be all, 1 or 0, got {acks!r}")
    return acks in ("all", "-1")


def check_user_topic(name: str, verb: str) -> None:
    """Refuse to let a client ``verb`` a topic the system keeps for itself (``__`` names)."""
    if is_internal(name):
        raise errors.InvalidTopicName(
            f"cannot {verb} {name!r}: topic names beginning with {RESERVED_PREFIX!r} are "
            "reserved for the broker's internal topics"
        )


def flag_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise errors.InvalidRequest(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise errors.MalformedJson("request body is empty; expected JSON")
    try:
        return json.loads(raw, parse_float=_json_number, parse_constant=_refuse_constant)
    except RecursionError:
        raise errors.MalformedJson("request body nests arrays or objects too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.MalformedJson(f"request body is not valid JSON: {exc}") from None


def _json_number(literal: str) -> int | float:
    # JSON has one number type and JSON Schema counts 3.0 as the integer 3, so an integral
    # literal is an int here too. Decimal keeps 1e18 exact; a huge exponent stays a float
    # (refused where an integer is due) rather than becoming a million-digit int.
    number = Decimal(literal)
    if number.adjusted() < _MAX_DIGITS and number == number.to_integral_value():
        return int(number)
    return float(literal)


def _refuse_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity, which are not JSON (RFC 8259).
    raise ValueError(f"{name} is not a JSON value")


def wants(request: web.Request, media_type: str) -> bool:
    """Whether the Accept header names ``media_type`` (no q-value ranking: types here are exact)."""
    accept = request.headers.get("Accept", "").lower()
    return any(part.split(";")[0].strip() == media_type for part in accept.split(","))


def object_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    """``body`` if it is a JSON object without fields outside ``allowed``."""
    if not isinstance(body, dict):
        raise errors.InvalidRequest("body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise errors.InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    return body


def topic_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The "config" object of a body, None if absent or null; its values checked for type."""
    config = body.get("config")
    if config is None:
        return None
    # Refused outright, so that a falsy non-object ([], 0, "") cannot pass as "no config".
    if not isinstance(config, dict):
        raise errors.InvalidConfig('"config" must be an object of setting names to values')
    # Values travel as integers or, as Kafka tools send them, decimal strings; ASCII digits
    # only, as storage's int() would also take "1_000" or other scripts' digits.
    for name, value in config.items():
        if isinstance(value, str) and not _INTEGER.fullmatch(value):
            raise errors.InvalidConfig(
                f"config {name!r} must be an integer or a string of decimal digits, got {value!r}"
            )
    return config
