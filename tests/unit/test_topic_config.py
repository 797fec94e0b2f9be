"""Topic settings: Kafka names, integer or string values, bounds."""

from __future__ import annotations

import pytest

from millstream.broker.storage.config import TopicConfig
from millstream.errors import InvalidConfig


def test_defaults_are_durable() -> None:
    config = TopicConfig()
    assert config.flush_ms == 0
    assert config.to_mapping()["retention.ms"] == 7 * 24 * 3600 * 1000


def test_updates_accept_numbers_and_strings() -> None:
    config = TopicConfig().with_updates({"retention.ms": "1000", "segment.bytes": 8192})
    assert (config.retention_ms, config.segment_bytes) == (1000, 8192)
    assert config.with_updates({}) == config


@pytest.mark.parametrize(
    "updates",
    [
        {"nope": 1},
        {"segment.bytes": 10},
        {"retention.ms": 0},
        {"retention.ms": -2},
        {"flush.ms": "fast"},
        {"flush.ms": True},
        {"max.message.bytes": 1.5},
        [("retention.ms", 1)],
    ],
)
def test_bad_updates_are_refused(updates: object) -> None:
    with pytest.raises(InvalidConfig):
        TopicConfig().with_updates(updates)  # type: ignore[arg-type]
