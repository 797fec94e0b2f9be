"""Partition placement: balance, determinism, stability when partitions grow, the fewest moves
when brokers come and go (checked against a brute force over every balanced shape), and the
spread of many small topics over the brokers."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from millstream.operator.placement import Move, broker_loads, moves, place, topic_offset

broker_sets = st.sets(st.integers(min_value=0, max_value=40), min_size=1, max_size=8).map(sorted)
offsets = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def placed(draw: st.DrawFn) -> tuple[int, list[int], dict[int, int]]:
    """A partition count, a broker set, and any placement of some of the partitions, on
    those brokers or on brokers since removed (unbalanced, with gaps)."""
    partitions = draw(st.integers(min_value=0, max_value=60))
    brokers = draw(broker_sets)
    removed = draw(st.lists(st.integers(min_value=41, max_value=45), max_size=2))
    where = st.sampled_from(brokers + removed)
    placed_ones = draw(st.sets(st.integers(min_value=0, max_value=max(partitions - 1, 0))))
    current = {p: draw(where) for p in sorted(placed_ones) if p < partitions}
    return partitions, brokers, current


def assert_balanced(placement: Mapping[int, int], partitions: int, brokers: Sequence[int]) -> None:
    assert sorted(placement) == list(range(partitions))
    assert set(placement.values()) <= set(brokers)
    loads = broker_loads(placement, brokers).values()
    assert max(loads) - min(loads) <= 1


def fewest_moves(partitions: int, brokers: Sequence[int], current: Mapping[int, int]) -> int:
    """The least number of placed partitions any balanced placement has to move, by trying
    every choice of the brokers that get the larger share."""
    share, extra = divmod(partitions, len(brokers))
    held = Counter(b for b in current.values() if b in brokers)
    best_kept = max(
        sum(min(held[b], share + (b in larger)) for b in brokers)
        for larger in map(set, itertools.combinations(brokers, extra))
    )
    return len(current) - best_kept


def test_a_fresh_topic_is_dealt_round_robin() -> None:
    assert place(7, [0, 1, 2]) == {0: 0, 1: 1, 2: 2, 3: 0, 4: 1, 5: 2, 6: 0}
    assert place(4, [0, 1, 2], offset=2) == {0: 2, 1: 0, 2: 1, 3: 2}


def test_broker_ids_need_not_be_contiguous() -> None:
    assert place(4, [7, 3, 5]) == {0: 3, 1: 5, 2: 7, 3: 3}


def test_no_partitions_place_nothing() -> None:
    assert place(0, []) == {}
    assert place(0, [0, 1]) == {}


def test_growing_keeps_what_is_placed_and_continues_the_rotation() -> None:
    before = place(4, [0, 1, 2])
    assert place(6, [0, 1, 2], before) == {**before, 4: 1, 5: 2}


def test_a_new_broker_takes_only_its_share() -> None:
    before = place(6, [0, 1, 2])
    after = place(6, [0, 1, 2, 3], before)
    assert moves(before, after) == [Move(partition=5, source=2, target=3)]
    assert_balanced(after, 6, [0, 1, 2, 3])


def test_a_removed_brokers_partitions_move_and_nothing_else() -> None:
    before = place(9, [0, 1, 2])
    after = place(9, [0, 1], before)
    moved = moves(before, after)
    assert {m.source for m in moved} == {2}
    assert len(moved) == 3
    assert_balanced(after, 9, [0, 1])


@pytest.mark.parametrize(
    ("partitions", "brokers", "current", "message"),
    [
        (-1, [0], None, "negative"),
        (1, [], None, "no brokers"),
        (2, [0, 0], None, "unique"),
        (2, [-1, 0], None, "negative"),
        (2, [0], {2: 0}, "cannot be removed"),
    ],
)
def test_bad_requests_are_refused(
    partitions: int, brokers: list[int], current: dict[int, int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        place(partitions, brokers, current)


@settings(max_examples=300, deadline=None)
@given(placed(), offsets)
def test_placement_is_balanced(case: tuple[int, list[int], dict[int, int]], offset: int) -> None:
    partitions, brokers, current = case
    assert_balanced(place(partitions, brokers, current, offset=offset), partitions, brokers)


@settings(max_examples=200, deadline=None)
@given(placed(), offsets, st.randoms(use_true_random=False))
def test_placement_ignores_input_order(
    case: tuple[int, list[int], dict[int, int]], offset: int, rng: random.Random
) -> None:
    partitions, brokers, current = case
    shuffled_brokers = rng.sample(brokers, len(brokers))
    items = list(current.items())
    rng.shuffle(items)
    expected = place(partitions, brokers, current, offset=offset)
    assert place(partitions, shuffled_brokers, dict(items), offset=offset) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=60),
    broker_sets,
    offsets,
)
def test_growing_a_balanced_topic_moves_nothing(
    partitions: int, more: int, brokers: list[int], offset: int
) -> None:
    before = place(partitions, brokers, offset=offset)
    after = place(partitions + more, brokers, before, offset=offset)
    assert {p: after[p] for p in before} == before


@settings(max_examples=300, deadline=None)
@given(placed(), offsets)
@example((3, [0, 1], {0: 1, 1: 1}), 0)  # broker 1 holds two: it keeps the larger share
def test_placement_moves_the_fewest_partitions_balance_allows(
    case: tuple[int, list[int], dict[int, int]], offset: int
) -> None:
    partitions, brokers, current = case
    after = place(partitions, brokers, current, offset=offset)
    assert len(moves(current, after)) == fewest_moves(partitions, brokers, current)
    # Every move is forced: its broker is gone, or holds more than its share.
    share = partitions // len(brokers)
    held = Counter(current.values())
    for move in moves(current, after):
        assert move.source not in brokers or held[move.source] > share


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=40),
    broker_sets,
    broker_sets,
    st.sampled_from(["orders", "payments", "clicks"]),
)
def test_scaling_out_then_back_in(
    partitions: int, first: list[int], second: list[int], topic: str
) -> None:
    offset = topic_offset(topic)
    before = place(partitions, first, offset=offset)
    during = place(partitions, second, before, offset=offset)
    after = place(partitions, first, during, offset=offset)
    for placement, brokers in ((during, second), (after, first)):
        assert_balanced(placement, partitions, brokers)
    if set(second) >= set(first):
        # Brokers were only added: whatever moved, moved onto the new ones.
        assert {m.target for m in moves(before, during)} <= set(second) - set(first)


def test_topic_offset_is_stable_across_processes() -> None:
    # CRC-32 of the name: a fixed value, not Python's per-process string hash.
    assert topic_offset("orders") == 0xE52FFDEE
    assert topic_offset("") == 0


def test_many_single_partition_topics_spread_over_every_broker() -> None:
    brokers = [0, 1, 2, 3, 4]
    topics = [f"topic-{i}" for i in range(200)]
    loads = Counter(place(1, brokers, offset=topic_offset(t))[0] for t in topics)
    assert set(loads) == set(brokers)
    assert max(loads.values()) < 2 * min(loads.values())


def test_moves_lists_changed_partitions_only() -> None:
    assert moves({0: 0, 1: 1, 2: 2}, {0: 0, 1: 2, 2: 2, 3: 1}) == [Move(1, 1, 2)]
