"""The move state machine, by hand: starting, switching by push, fencing, cancelling, releasing,
and what each broker serves and holds meanwhile."""

from __future__ import annotations

from dataclasses import replace

import pytest

from millstream import errors
from millstream.broker.cluster import moves
from millstream.broker.cluster.metadata import (
    BrokerInfo,
    ClusterMetadata,
    TopicPlacement,
    make_cluster,
    with_topic,
)
from millstream.broker.cluster.moves import Move, MoveState, Transfers

BROKERS = [BrokerInfo(i, f"http://broker-{i}") for i in range(3)]
SOURCE, RECEIVER, OTHER = 0, 1, 2


def topic(placement: tuple[int, ...] = (0, 0, 2), epoch: int | None = 1) -> TopicPlacement:
    return TopicPlacement("t", len(placement), {}, placement, "id", epoch)


def cluster(placed: TopicPlacement | None = None) -> ClusterMetadata:
    metadata = make_cluster(None, 1, BROKERS)
    return metadata if placed is None else with_topic(metadata, placed)


def started(partition: int = 1, throttle: int | None = None) -> Transfers:
    request = Move("t", partition, SOURCE, throttle_bytes_per_s=throttle, created_ms=1)
    return moves.start_move(Transfers(), cluster(topic()), RECEIVER, request)


def test_a_move_starts_copying_from_the_partitions_broker() -> None:
    transfers = started(throttle=1000)
    move = transfers.moves["t", 1]
    assert (move.state, move.source, move.throttle_bytes_per_s) == (MoveState.COPYING, 0, 1000)
    # The receiver holds the copy without serving it; nothing else changes for it.
    assert moves.placement_here(transfers, topic(), RECEIVER) == (frozenset(), frozenset({1}))
    assert not transfers.moving("t", 1)
    # Started again: the same move, with the throttle asked for now (none: unthrottled).
    request = replace(move, created_ms=9, throttle_bytes_per_s=None)
    again = moves.start_move(transfers, cluster(topic()), RECEIVER, request)
    assert again.moves["t", 1] == replace(move, throttle_bytes_per_s=None)
    assert moves.start_move(transfers, cluster(topic()), RECEIVER, move) is transfers


@pytest.mark.parametrize(
    ("request_", "broker_id", "error", "match"),
    [
        (Move("t", 2, SOURCE), RECEIVER, errors.MoveConflict, "served by broker 2"),
        (Move("t", 1, SOURCE), SOURCE, errors.MoveConflict, "already placed"),
        (Move("nope", 0, SOURCE), RECEIVER, errors.UnknownTopic, "not placed"),
        (Move("t", 3, SOURCE), RECEIVER, errors.UnknownPartition, "0 to 2"),
    ],
)
def test_a_move_that_makes_no_sense_is_refused(
    request_: Move, broker_id: int, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        moves.start_move(Transfers(), cluster(topic()), broker_id, request_)


def test_a_move_needs_a_cluster_and_no_retired_copy_in_the_way() -> None:
    with pytest.raises(errors.InvalidPlacement):
        moves.start_move(Transfers(), None, RECEIVER, Move("t", 1, SOURCE))
    retired = Transfers(retired=frozenset({("t", 1)}))
    with pytest.raises(errors.MoveConflict, match="release it"):
        moves.start_move(retired, cluster(topic()), RECEIVER, Move("t", 1, SOURCE))


def test_the_push_that_places_it_here_switches_it() -> None:
    transfers = moves.after_push(started(), topic(), topic((0, 1, 2), epoch=2), RECEIVER)
    move = transfers.moves["t", 1]
    assert (move.state, move.epoch, move.final_offset) == (MoveState.SWITCHING, 2, None)
    assert transfers.moving("t", 1)
    # Placed here, but held (not served) until the tail is copied.
    hosted, held = moves.placement_here(transfers, topic((0, 1, 2), epoch=2), RECEIVER)
    assert (hosted, held) == (frozenset(), frozenset({1}))
    # The same switch again at a later epoch: fence with that one; the final offset stays.
    fenced = transfers.with_move(replace(move, final_offset=40))
    later = moves.after_push(fenced, topic((0, 1, 2), 2), topic((0, 1, 2), epoch=3), RECEIVER)
    assert (later.moves["t", 1].epoch, later.moves["t", 1].final_offset) == (3, 40)


def test_a_switch_needs_an_epoch() -> None:
    with pytest.raises(errors.InvalidPlacement, match="epoch"):
        moves.after_push(started(), topic(), topic((0, 1, 2), epoch=None), RECEIVER)


def test_a_switch_taken_back_copies_again_and_a_third_broker_fails_it() -> None:
    switching = moves.after_push(started(), topic(), topic((0, 1, 2), epoch=2), RECEIVER)
    back = moves.after_push(switching, topic((0, 1, 2), 2), topic((0, 0, 2), 3), RECEIVER)
    assert back.moves["t", 1].state is MoveState.COPYING and not back.moving("t", 1)
    elsewhere = moves.after_push(back, topic((0, 0, 2), 3), topic((0, 2, 2), 4), RECEIVER)
    failed = elsewhere.moves["t", 1]
    assert failed.state is MoveState.FAILED and "broker 2" in (failed.error or "")
    # A failed move stays failed through pushes, until it is started again.
    same = moves.after_push(elsewhere, topic((0, 2, 2), 4), topic((0, 0, 2), 5), RECEIVER)
    assert same.moves["t", 1].state is MoveState.FAILED
    again = moves.start_move(same, cluster(topic((0, 0, 2), 5)), RECEIVER, Move("t", 1, SOURCE))
    assert again.moves["t", 1].state is MoveState.COPYING and again.moves["t", 1].error is None


def test_a_failed_or_stale_move_never_switches_when_placed_here() -> None:
    # The partition went to a third broker (which then took writes): the copy from the old
    # source is stale, and switching it in would lose what the third broker acknowledged.
    failed = moves.after_push(started(), topic(), topic((0, 2, 2), 2), RECEIVER)
    assert failed.moves["t", 1].state is MoveState.FAILED
    placed_here = moves.after_push(failed, topic((0, 2, 2), 2), topic((0, 1, 2), 3), RECEIVER)
    move = placed_here.moves["t", 1]
    assert move.state is MoveState.FAILED and not placed_here.moving("t", 1)
    # Nor does a copying move whose source is not the partition's previous owner.
    skipped = moves.after_push(started(), topic((0, 2, 2), 2), topic((0, 1, 2), 3), RECEIVER)
    assert skipped.moves["t", 1].state is MoveState.FAILED
    assert "previous owner 2" in (skipped.moves["t", 1].error or "")


def test_a_partition_that_moves_away_is_retired_whatever_the_order_of_pushes() -> None:
    # The source gets the push: it keeps its copy, read-only, until released.
    retired = moves.after_push(Transfers(), topic(), topic((0, 1, 2), epoch=2), SOURCE)
    assert retired.retired == {("t", 1)}
    assert moves.placement_here(retired, topic((0, 1, 2), 2), SOURCE) == (
        frozenset({0}),
        frozenset({1}),
    )
    # A third broker sees nothing to keep.
    assert moves.after_push(Transfers(), topic(), topic((0, 1, 2), 2), OTHER) == Transfers()
    # Placed back on the source: served again, the retired copy revived.
    back = moves.after_push(retired, topic((0, 1, 2), 2), topic((0, 0, 2), 3), SOURCE)
    assert back.retired == frozenset()
    assert moves.placement_here(back, topic((0, 0, 2), 3), SOURCE)[0] == {0, 1}
    # Released: nothing held.
    assert moves.release(retired, ("t", 1)).retired == frozenset()
    with pytest.raises(errors.UnknownPartition):
        moves.release(Transfers(), ("t", 1))


def test_a_fence_places_the_partition_on_its_new_broker_and_retires_it() -> None:
    metadata = cluster(topic(epoch=1))
    fenced, transfers = moves.fence(metadata, Transfers(), SOURCE, ("t", 1), 2, RECEIVER)
    assert fenced.topics["t"].placement == (0, 1, 2) and fenced.topics["t"].epoch == 2
    assert transfers.retired == {("t", 1)}
    # Idempotent: the receiver may ask again (it restarted, or the answer was lost).
    assert moves.fence(fenced, transfers, SOURCE, ("t", 1), 2, RECEIVER) == (fenced, transfers)
    # A later push with the epoch before the fence is stale.
    with pytest.raises(errors.StaleEpoch):
        with_topic(fenced, topic(epoch=1))
    # ... as is a fence older than the topic's epoch.
    with pytest.raises(errors.StaleEpoch):
        moves.fence(cluster(topic(epoch=5)), Transfers(), SOURCE, ("t", 1), 4, RECEIVER)


@pytest.mark.parametrize(
    ("partition", "owner", "error"),
    [
        (2, RECEIVER, errors.MoveConflict),  # served by broker 2, not here
        (1, SOURCE, errors.InvalidPlacement),  # in favour of itself
        (1, 7, errors.InvalidPlacement),  # not in the cluster
    ],
)
def test_a_fence_that_makes_no_sense_is_refused(
    partition: int, owner: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        moves.fence(cluster(topic()), Transfers(), SOURCE, ("t", partition), 2, owner)


def test_cancel_drops_a_copying_move_but_not_a_switching_one() -> None:
    transfers = started()
    assert moves.cancel(transfers, ("t", 1)) == Transfers()
    switching = moves.after_push(transfers, topic(), topic((0, 1, 2), 2), RECEIVER)
    with pytest.raises(errors.MoveConflict, match="switching"):
        moves.cancel(switching, ("t", 1))
    with pytest.raises(errors.UnknownMove):
        moves.cancel(Transfers(), ("t", 1))


def test_a_completed_move_is_served_and_forgotten_at_will() -> None:
    switching = moves.after_push(started(), topic(), topic((0, 1, 2), 2), RECEIVER)
    done = switching.with_move(replace(switching.moves["t", 1], state=MoveState.COMPLETED))
    assert moves.placement_here(done, topic((0, 1, 2), 2), RECEIVER) == (
        frozenset({1}),
        frozenset(),
    )
    assert not done.moving("t", 1)
    # Moved on later: retired here like any partition that leaves.
    left = moves.after_push(done, topic((0, 1, 2), 2), topic((0, 2, 2), 3), RECEIVER)
    assert left.retired == {("t", 1)} and left.moves["t", 1].state is MoveState.COMPLETED
    assert moves.cancel(done, ("t", 1)).moves == {}


def test_completed_moves_are_pruned_oldest_first() -> None:
    count = moves.MAX_COMPLETED
    done = {
        ("t", p): Move("t", p, SOURCE, MoveState.COMPLETED, completed_ms=p) for p in range(count)
    }
    placed = topic(tuple([0] * (count + 2)))
    request = Move("t", count, SOURCE)
    transfers = moves.start_move(Transfers(done), cluster(placed), RECEIVER, request)
    assert len(transfers.moves) == count + 1  # no more completed ones than kept
    more = transfers.with_move(replace(request, state=MoveState.COMPLETED, completed_ms=500))
    pruned = moves.start_move(more, cluster(placed), RECEIVER, Move("t", count + 1, SOURCE))
    assert ("t", count + 1) in pruned.moves and ("t", count) in pruned.moves
    assert ("t", 0) not in pruned.moves  # the oldest completed one went
    assert len(pruned.moves) == count + 1


def test_deleting_a_topic_forgets_its_moves_and_copies() -> None:
    transfers = replace(started(), retired=frozenset({("t", 2), ("u", 0)}))
    assert transfers.without_topic("t") == Transfers(retired=frozenset({("u", 0)}))
