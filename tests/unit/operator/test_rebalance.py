"""millstream.operator.rebalance: the moves of scale-out, scale-in and on-demand rebalances,
the brokers the StatefulSet keeps, and the progress shown in the Cluster's status."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from millstream.operator import rebalance
from millstream.operator.placement import broker_loads, place, topic_offset
from millstream.operator.rebalance import MoveProgress, PlannedMove, Request


def fresh(name: str, partitions: int, brokers: int) -> dict[int, int]:
    return place(partitions, range(brokers), offset=topic_offset(name))


def test_scale_out_moves_a_balanced_share_to_the_new_broker() -> None:
    placements = {"orders": fresh("orders", 6, 2)}
    moves = rebalance.plan_moves(placements, 3)
    assert len(moves) == 2
    assert all(m.target == 2 and m.topic == "orders" for m in moves)
    after = rebalance.target_placements(placements, 3)["orders"]
    assert broker_loads(after, range(3)) == {0: 2, 1: 2, 2: 2}


def test_scale_in_moves_everything_off_the_leaving_brokers_only() -> None:
    placements = {"orders": fresh("orders", 6, 3)}
    moves = rebalance.plan_moves(placements, 2)
    assert {m.source for m in moves} == {2}
    assert {m.target for m in moves} <= {0, 1}
    after = rebalance.target_placements(placements, 2)["orders"]
    assert set(after.values()) == {0, 1}


def test_a_balanced_cluster_plans_nothing() -> None:
    placements = {"a": fresh("a", 5, 3), "b": fresh("b", 1, 3)}
    assert rebalance.plan_moves(placements, 3) == []


def test_on_demand_rebalance_evens_out_an_adopted_topic() -> None:
    moves = rebalance.plan_moves({"t": dict.fromkeys(range(4), 0)}, 2)
    assert len(moves) == 2 and all(m.source == 0 and m.target == 1 for m in moves)


placements_strategy = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=4),
    st.tuples(st.integers(0, 12), st.integers(1, 6)).map(lambda pb: (pb[0], pb[1])),
    max_size=4,
)


@given(placements_strategy, st.integers(1, 6))
def test_planned_moves_reach_a_balanced_placement_moving_as_little_as_needed(
    topics: dict[str, tuple[int, int]], brokers: int
) -> None:
    placements = {name: fresh(name, p, b) for name, (p, b) in topics.items()}
    moves = rebalance.plan_moves(placements, brokers)
    after = {name: dict(p) for name, p in placements.items()}
    for move in moves:
        assert after[move.topic][move.partition] == move.source
        after[move.topic][move.partition] = move.target
    for name, placement in after.items():
        loads = broker_loads(placement, range(brokers))
        assert set(loads) <= set(range(brokers))
        assert max(loads.values()) - min(loads.values()) <= 1
        before = broker_loads(placements[name], range(brokers))
        # Each broker that stays keeps min(what it held, its share): only the excess moves.
        share = len(placement) // brokers
        kept = sum(1 for p, b in placements[name].items() if b < brokers and placement[p] == b)
        assert kept >= sum(min(n, share) for b, n in before.items() if b < brokers)
    assert rebalance.plan_moves(after, brokers) == []


def test_a_rebalance_is_wanted_on_scale_in_scale_out_and_on_request() -> None:
    two = [fresh("t", 4, 2)]
    three = [fresh("t", 4, 3)]
    assert rebalance.wanted(Request(2, 3, None, None), three)
    assert rebalance.wanted(Request(3, 2, None, None), two)
    assert not rebalance.wanted(Request(2, 2, None, None), two)
    assert not rebalance.wanted(Request(3, None, None, None), two)
    assert rebalance.wanted(Request(2, 2, "now", None), two)
    assert not rebalance.wanted(Request(2, 2, "now", "now"), two)


MOVE = PlannedMove("t", 1, 0, 2)


def test_progress_from_the_receivers_reports() -> None:
    report = {"state": "in_sync", "bytes_copied": 1000, "lag": 0, "error": None}
    progress = rebalance.move_progress(MOVE, report, None)
    assert progress.state == "in_sync" and progress.bytes_copied == 1000 and progress.lag == 0
    # A receiver that forgot its move (restarted counters, or DELETE after completion).
    done = rebalance.move_progress(MOVE, None, {"state": "completed", "bytesCopied": 1000})
    assert done.state == "completed" and done.bytes_copied == 1000
    assert rebalance.move_progress(MOVE, None, None).state == "pending"
    failed = rebalance.move_progress(MOVE, {"state": "failed", "error": "boom"}, {"retries": 2})
    assert failed.error == "boom" and failed.retries == 2
    paced = rebalance.move_progress(MOVE, {"state": "copying", "throttle_bytes_per_s": 5}, None)
    assert paced.throttle == 5 and rebalance.move_progress(MOVE, report, None).throttle is None


def test_a_receiving_brokers_throttle_is_shared_by_its_running_copies() -> None:
    onto_2 = [PlannedMove("t", p, 0, 2) for p in range(3)]
    onto_3 = PlannedMove("t", 3, 1, 3)
    states = ["copying", "pending", "failed"]
    moves = [MoveProgress(m, s) for m, s in zip(onto_2, states, strict=True)]
    moves += [MoveProgress(onto_3, "copying"), MoveProgress(PlannedMove("t", 4, 0, 3), "switching")]
    moves += [MoveProgress(PlannedMove("t", 5, 0, 2), "completed")]
    shares = rebalance.throttle_shares(moves, 900)
    # Three copies onto broker 2 split its 900 bytes/s; the switching and completed ones take
    # no share, so broker 3's one copy has it all.
    assert shares == {**dict.fromkeys(onto_2, 300), onto_3: 900}
    assert rebalance.throttle_shares(moves, None) == {**dict.fromkeys(onto_2), onto_3: None}
    crowded = [MoveProgress(PlannedMove("t", p, 0, 2), "copying") for p in range(5)]
    assert set(rebalance.throttle_shares(crowded, 3).values()) == {1}  # never 0: no limit


def test_status_round_trips_the_plan() -> None:
    moves = (
        MoveProgress(MOVE, "completed", 10),
        MoveProgress(PlannedMove("t", 3, 1, 2), "copying", 5, lag=7),
    )
    status = rebalance.Progress("Moving", moves, brokers=3).to_status()
    assert status["movesCompleted"] == 1 and status["movesTotal"] == 2
    assert status["bytesCopied"] == 15 and status["phase"] == "Moving"
    assert rebalance.planned_from_status(status) == [m.move for m in moves]
    assert set(rebalance.rows_by_move(status)) == {m.move for m in moves}


def test_phases() -> None:
    copying = [MoveProgress(MOVE, "copying")]
    done = [MoveProgress(MOVE, "completed")]
    failed = [MoveProgress(MOVE, "failed", error="x")]
    assert rebalance.phase(copying, brokers=3, running=3, drained=False) == "Moving"
    assert rebalance.phase(copying, brokers=2, running=3, drained=False) == "Draining"
    assert rebalance.phase(done, brokers=2, running=3, drained=False) == "Draining"
    assert rebalance.phase(done, brokers=2, running=3, drained=True) == "ScalingDown"
    assert rebalance.phase(done, brokers=3, running=3, drained=False) == "Idle"
    assert rebalance.phase(failed, brokers=3, running=3, drained=False) == "Failed"
    assert rebalance.phase([], brokers=3, running=3, drained=False) == "Idle"


def test_no_pod_that_holds_partitions_or_a_move_is_removed() -> None:
    switching = [MoveProgress(PlannedMove("t", 0, 2, 0), "switching")]
    # The placement already says broker 0, but the switch reads the tail from broker 2.
    assert rebalance.replicas_during(2, [{0: 0}], switching, running=3, drained=[2]) == 3
    done = [MoveProgress(PlannedMove("t", 0, 2, 0), "completed")]
    assert rebalance.replicas_during(2, [{0: 0}], done, running=3) == 3  # not seen drained
    assert rebalance.replicas_during(2, [{0: 0}], done, running=3, drained=[2]) == 2
    assert rebalance.replicas_during(2, [{0: 2}], done, running=3, drained=[2]) == 3
    assert rebalance.replicas_during(3, [{0: 0}], [], running=2) == 3


def test_drained_means_nothing_served_or_received() -> None:
    assert rebalance.is_drained({"partitions": []})
    assert rebalance.is_drained({"partitions": [{"role": "retired"}]})
    assert not rebalance.is_drained({"partitions": [{"role": "serving"}]})
    assert not rebalance.is_drained({"partitions": [{"role": "receiving"}]})
    assert not rebalance.is_drained(None)


def test_in_sync_moves_of_a_topic_switch_in_one_push_at_the_next_epoch() -> None:
    moves = [
        MoveProgress(PlannedMove("t", 1, 0, 2), "in_sync"),
        MoveProgress(PlannedMove("t", 3, 1, 2), "in_sync"),
        MoveProgress(PlannedMove("u", 0, 0, 2), "copying"),
        MoveProgress(PlannedMove("v", 0, 0, 2), "in_sync"),
    ]
    placements = {"t": {0: 0, 1: 0, 2: 1, 3: 1}, "u": {0: 0}, "v": {0: 2}}
    (switch,) = rebalance.switches(moves, placements, {"t": 4})
    assert switch.topic == "t" and switch.epoch == 5
    assert switch.placement == {0: 0, 1: 2, 2: 1, 3: 2}
    assert rebalance.switches(moves[:1], placements, {})[0].epoch == 1


# --- the topic epoch a switch sets, carried by every later push -------------------------------


def test_pushes_carry_the_epoch_a_switch_wrote_into_the_topics_status() -> None:
    from datetime import UTC, datetime

    from millstream.operator import plan
    from millstream.operator.specs import parse_cluster, parse_topic
    from millstream.operator.status import topic_status
    from tests.unit.operator.support import body

    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = {
        "observedGeneration": 1,
        "topicName": "example",
        "topicId": "id-1",
        "partitions": 2,
        "placement": [{"partition": 0, "replicas": [0]}, {"partition": 1, "replicas": [2]}],
        "epoch": 4,
    }
    topic = body("Topic", {"cluster": "events", "partitions": 2}, status=status)
    topic["metadata"]["annotations"] = {plan.PLACED_ON_ANNOTATION: "events"}
    (target,) = plan.drift_targets("events", [topic])
    assert target.epoch == 4 and dict(target.placement) == {0: 0, 1: 2}
    decided = plan.plan_topic(
        parse_topic(topic), status, placed_on="events", brokers=range(2), existing=None
    )
    assert decided.target is not None and decided.target.epoch == 4
    # The placement the rebalance wrote stands, even on a broker past spec.brokers.
    assert dict(decided.target.placement) == {0: 0, 1: 2}
    # A reconcile that places nothing keeps the epoch; a switch raises it.
    assert topic_status(parse_topic(topic), status, now=now)["epoch"] == 4
    assert topic_status(parse_topic(topic), status, now=now, epoch=5)["epoch"] == 5
    # Without a switch yet, pushes carry no epoch.
    del status["epoch"]
    (target,) = plan.drift_targets(
        "events", [body("Topic", topic["spec"], status=status) | {"metadata": topic["metadata"]}]
    )
    assert target.epoch is None
    cluster = body("Cluster", {"rebalance": {"throttleBytesPerSecond": 1048576}})
    assert parse_cluster(cluster).throttle_bytes_per_s == 1048576
    assert parse_cluster(body("Cluster", {})).throttle_bytes_per_s is None
