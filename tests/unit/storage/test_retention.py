"""Retention decisions: a prefix of closed segments, by age and by total size."""

from __future__ import annotations

from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.retention import SegmentStats, segments_to_delete

NOW = 1_000_000


def seg(base: int, size: int = 100, ts: int = NOW, deletable: bool = True) -> SegmentStats:
    return SegmentStats(base, base + 10, size, ts, deletable)


def test_nothing_by_default_for_young_data() -> None:
    segments = [seg(0), seg(10), seg(20, deletable=False)]
    assert segments_to_delete(segments, TopicConfig(), NOW) == 0


def test_by_time_deletes_old_segments_from_the_start() -> None:
    config = TopicConfig(retention_ms=1000)
    segments = [seg(0, ts=NOW - 5000), seg(10, ts=NOW - 1001), seg(20, ts=NOW - 1000), seg(30)]
    assert segments_to_delete(segments, config, NOW) == 2


def test_by_time_stops_at_the_first_young_segment() -> None:
    config = TopicConfig(retention_ms=1000)
    segments = [seg(0, ts=NOW - 5000), seg(10, ts=NOW), seg(20, ts=NOW - 5000), seg(30)]
    assert segments_to_delete(segments, config, NOW) == 1


def test_never_the_active_segment() -> None:
    config = TopicConfig(retention_ms=1, retention_bytes=0)
    segments = [seg(0, ts=0), seg(10, ts=0, deletable=False)]
    assert segments_to_delete(segments, config, NOW) == 1
    assert segments_to_delete([seg(0, ts=0, deletable=False)], config, NOW) == 0


def test_forever_keeps_everything() -> None:
    config = TopicConfig(retention_ms=-1, retention_bytes=-1)
    assert segments_to_delete([seg(0, ts=0), seg(1, ts=0), seg(2)], config, NOW) == 0


def test_by_size_deletes_oldest_until_within_the_limit() -> None:
    segments = [seg(0, 100), seg(10, 100), seg(20, 100), seg(30, 50, deletable=False)]
    assert segments_to_delete(segments, TopicConfig(retention_bytes=350), NOW) == 0
    assert segments_to_delete(segments, TopicConfig(retention_bytes=349), NOW) == 1
    assert segments_to_delete(segments, TopicConfig(retention_bytes=150), NOW) == 2
    assert segments_to_delete(segments, TopicConfig(retention_bytes=0), NOW) == 3


def test_by_size_stops_at_a_segment_that_must_stay() -> None:
    segments = [seg(0), seg(10, deletable=False), seg(20), seg(30, deletable=False)]
    assert segments_to_delete(segments, TopicConfig(retention_bytes=0), NOW) == 1


def test_the_larger_of_both_rules_wins() -> None:
    segments = [seg(0, ts=0), seg(10), seg(20), seg(30, deletable=False)]
    config = TopicConfig(retention_ms=1000, retention_bytes=150)
    assert segments_to_delete(segments, config, NOW) == 3


def test_a_floor_deletes_the_segments_wholly_below_it() -> None:
    keep = TopicConfig(retention_ms=-1, retention_bytes=-1)
    segments = [seg(0), seg(10), seg(20), seg(30, deletable=False)]
    assert segments_to_delete(segments, keep, NOW, floor=19) == 1  # 10-19 ends above 19
    assert segments_to_delete(segments, keep, NOW, floor=20) == 2
    assert segments_to_delete(segments, keep, NOW, floor=10**9) == 3  # never the active one
    assert segments_to_delete([seg(0, deletable=False), seg(10)], keep, NOW, floor=50) == 0
