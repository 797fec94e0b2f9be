"""Per-topic settings: names, defaults, bounds, parsing. Used by the log manager and the HTTP layer.

Names follow Kafka's topic configs where the meaning is the same. ``flush.ms`` is the
durability switch: 0, the default, means every acknowledged write was fsynced first (concurrent
producers share each fsync); a positive value acknowledges after the write reaches the page
cache and fsyncs at most that many milliseconds later, so a power loss may lose that window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from millstream.errors import InvalidConfig

KIB = 1024
MIB = 1024 * KIB
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicConfig:
    segment_bytes: int = 128 * MIB
    segment_ms: int = 7 * DAY_MS
    retention_ms: int = 7 * DAY_MS  # -1: keep forever
    retention_bytes: int = -1  # per partition; -1: no size limit
    flush_ms: int = 0  # 0: fsync before every acknowledgement
    max_message_bytes: int = 8 * MIB  # largest batch accepted
    index_interval_bytes: int = 4 * KIB  # log bytes between two sparse index entries

    def to_mapping(self) -> dict[str, int]:
        return {_wire_name(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def with_updates(self, updates: Mapping[str, Any]) -> TopicConfig:
        """A copy with ``updates`` (wire names, e.g. ``"retention.ms"``) applied and checked."""
        if not isinstance(updates, Mapping):
            raise InvalidConfig("config must be an object of setting names to values")
        changes: dict[str, int] = {}
        for name, value in updates.items():
            field = _FIELDS.get(name)
            if field is None:
                known = ", ".join(sorted(_FIELDS))
                raise InvalidConfig(f"unknown config {name!r}; known: {known}")
            changes[field] = _parse_value(name, value)
        return dataclasses.replace(self, **changes)


def _wire_name(field: str) -> str:
    return field.replace("_", ".")


_FIELDS = {_wire_name(f.name): f.name for f in dataclasses.fields(TopicConfig)}

# Inclusive bounds for each setting (the OpenAPI document publishes them too).
BOUNDS: dict[str, tuple[int, int]] = {
    "segment.bytes": (4 * KIB, 1024 * MIB),
    "segment.ms": (1, 2**62),
    "retention.ms": (-1, 2**62),
    "retention.bytes": (-1, 2**62),
    "flush.ms": (0, DAY_MS),
    "max.message.bytes": (1 * KIB, 64 * MIB),
    "index.interval.bytes": (1, 64 * MIB),
}
# Values refused though within bounds: retention.ms 0 would delete everything at once.
EXCLUDED: dict[str, int] = {"retention.ms": 0}


def _parse_value(name: str, value: Any) -> int:
    # Kafka tools send every config as a string; JSON users send numbers. Both are fine.
    if isinstance(value, bool):
        raise InvalidConfig(f"config {name!r} must be an integer, not a boolean")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidConfig(f"config {name!r} must be an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise InvalidConfig(f"config {name!r} must be an integer, got {value!r}")
    low, high = BOUNDS[name]
    if not low <= value <= high:
        raise InvalidConfig(f"config {name!r} must be between {low} and {high}, got {value}")
    if EXCLUDED.get(name) == value:
        raise InvalidConfig(f"config {name!r} must not be {value} (retention.ms: -1 keeps forever)")
    return value
