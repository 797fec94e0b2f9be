"""Records as JSON: parse what people POST into record batches, and render batches as JSON.

Used by the produce and fetch handlers. A string key or value is stored as its UTF-8 bytes and
read back as the same string; binary data travels base64 in fields of its own (``key_base64``,
``value_base64``). Parsing checks every record before anything is built, so a request with one
bad record is refused whole.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from millstream import errors
from millstream.broker.http.params import INT64_MAX
from millstream.records import Record

MAX_RECORDS_PER_REQUEST = 100_000
# Standard base64 with its padding (RFC 4648, section 4). b64decode(validate=True) alone would
# also take "AAAA=": one pattern here and in the OpenAPI document says exactly what is taken.
BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@dataclass(frozen=True, slots=True)
class IncomingRecord:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    partition: int | None
    timestamp: int | None


def parse_produce_body(body: Any) -> list[IncomingRecord]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise errors.InvalidRequest('body must be an object with a "records" array')
    _refuse_unknown(body, {"records"}, "body")
    items = body["records"]
    if not items:
        raise errors.InvalidRequest('"records" must not be empty')
    if len(items) > MAX_RECORDS_PER_REQUEST:
        raise errors.InvalidRequest(f"at most {MAX_RECORDS_PER_REQUEST} records per request")
    return [_parse_record(i, item) for i, item in enumerate(items)]


_RECORD_FIELDS = frozenset(
    {"key", "key_base64", "value", "value_base64", "headers", "partition", "timestamp"}
)
_HEADER_FIELDS = frozenset({"key", "value", "value_base64"})


def _refuse_unknown(item: dict[str, Any], known: frozenset[str] | set[str], where: str) -> None:
    # A misspelt field would otherwise be dropped silently: "vaule" would store a null value.
    unknown = set(item) - known
    if unknown:
        raise errors.InvalidRequest(f"{where} has unknown fields: {', '.join(sorted(unknown))}")


def _parse_record(index: int, item: Any) -> IncomingRecord:
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise errors.InvalidRequest(f"{where} must be an object")
    _refuse_unknown(item, _RECORD_FIELDS, where)
    if "value" not in item and "value_base64" not in item:
        raise errors.InvalidRequest(f'{where} needs "value" (string or null) or "value_base64"')
    return IncomingRecord(
        key=_bytes_field(item, "key", where),
        value=_bytes_field(item, "value", where),
        headers=_parse_headers(item.get("headers"), where),
        partition=_optional_int(item, "partition", where),
        timestamp=_optional_int(item, "timestamp", where, maximum=INT64_MAX),
    )


def _bytes_field(item: dict[str, Any], name: str, where: str) -> bytes | None:
    text, encoded = item.get(name), item.get(name + "_base64")
    if text is not None and encoded is not None:
        raise errors.InvalidRequest(f"{where} has both {name!r} and {name + '_base64'!r}")
    if encoded is not None:
        return decode_base64(encoded, f"{where}.{name}_base64")
    if text is None:
        return None
    if not isinstance(text, str):
        raise errors.InvalidRequest(
            f"{where}.{name} must be a string or null (JSON-encode structured data; "
            f"send binary as {name}_base64)"
        )
    return _utf8(text, f"{where}.{name}", f"send binary as {name}_base64")


def decode_base64(encoded: Any, where: str) -> bytes:
    """The bytes of a ``*_base64`` field, or InvalidRequest naming the field."""
    if not isinstance(encoded, str):
        raise errors.InvalidRequest(f"{where} must be a base64 string")
    if not BASE64.fullmatch(encoded):
        raise errors.InvalidRequest(f"{where} is not valid base64")
    return base64.b64decode(encoded)


def _utf8(text: str, where: str, hint: str) -> bytes:
    # JSON's "\ud800" escapes decode to lone surrogates, which have no UTF-8 form.
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise errors.InvalidRequest(
            f"{where} is not valid Unicode (a lone surrogate); {hint}"
        ) from None


def _optional_int(
    item: dict[str, Any], name: str, where: str, maximum: int | None = None
) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    # A timestamp past int64 does not fit the batch header.
    too_large = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or too_large:
        bounds = ">= 0" if maximum is None else f"from 0 to {maximum}"
        raise errors.InvalidRequest(f"{where}.{name} must be an integer {bounds}")
    return value


def _parse_headers(raw: Any, where: str) -> tuple[tuple[str, bytes | None], ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):  # the short form: {"name": "value"}
        raw = [{"key": k, "value": v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raise errors.InvalidRequest(f"{where}.headers must be an array of {{key, value}} objects")
    headers = []
    for i, header in enumerate(raw):
        at = f"{where}.headers[{i}]"
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise errors.InvalidRequest(f"{at} must be an object with a string key")
        _refuse_unknown(header, _HEADER_FIELDS, at)
        _utf8(header["key"], f"{at}.key", "header keys are text")
        headers.append((header["key"], _bytes_field(header, "value", at)))
    return tuple(headers)


# --- rendering -------------------------------------------------------------------------------


def _render_bytes(out: dict[str, Any], name: str, data: bytes | None, base64_only: bool) -> None:
    if data is None:
        out[name] = None
        return
    if not base64_only:
        try:
            out[name] = data.decode()
            return
        except UnicodeDecodeError:
            pass
    out[name] = None
    out[name + "_base64"] = base64.b64encode(data).decode()


def render_record(record: Record, base64_only: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"offset": record.offset, "timestamp": record.timestamp}
    _render_bytes(out, "key", record.key, base64_only)
    _render_bytes(out, "value", record.value, base64_only)
    headers = []
    for key, value in record.headers:
        header: dict[str, Any] = {"key": key}
        _render_bytes(header, "value", value, base64_only)
        headers.append(header)
    out["headers"] = headers
    return out


def render_records(records: Iterable[Record], base64_only: bool = False) -> list[dict[str, Any]]:
    return [render_record(r, base64_only) for r in records]
