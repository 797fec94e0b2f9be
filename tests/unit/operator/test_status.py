"""Status computed from spec, observation and previous status: condition transitions (and the
transition times they keep), Topic placement kept through failures, NotSupported raised and
cleared, group lag from the broker's describe answer, offset resets once per generation, the
bounded refresh rate; every status valid against its CRD."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millstream.operator.specs import parse_cluster, parse_group, parse_topic
from millstream.operator.status import (
    ClusterObservation,
    Condition,
    Problem,
    RefreshSchedule,
    cluster_status,
    condition,
    group_refresh_pending,
    group_status,
    group_status_unavailable,
    last_refresh,
    merge_conditions,
    offset_reset_applied,
    offset_reset_due,
    offset_reset_refused,
    placement_from_status,
    rfc3339,
    topic_status,
    unsupported_changes,
)
from tests.k8s.crd_schema import errors, load_crds
from tests.unit.operator.support import body

CRDS = load_crds()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
UNREACHABLE = Problem("BrokersUnavailable", "events-0 did not answer")


def valid(kind: str, spec: dict[str, Any] | None, status: dict[str, Any]) -> dict[str, Any]:
    """``status`` after checking it against the CRD (the API server would prune the rest)."""
    assert errors(CRDS[kind], body(kind, spec, status=status)) == []
    return status


def ready(status: dict[str, Any]) -> tuple[str, str, str]:
    found = condition(status, "Ready")
    assert found is not None
    return found["status"], found["reason"], found["lastTransitionTime"]


# Conditions


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = merge_conditions(None, [Condition("Ready", "False", "A", "a")], generation=1, now=T0)
    same = merge_conditions(first, [Condition("Ready", "False", "B", "b")], generation=2, now=T1)
    assert same == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "B",
            "message": "b",
            "observedGeneration": 2,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    flipped = merge_conditions(same, [Condition("Ready", "True", "C", "c")], generation=2, now=T2)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:02:00Z"


def test_conditions_of_other_types_stay_unless_dropped() -> None:
    both = merge_conditions(
        None,
        [Condition("Ready", "True", "A", "a"), Condition("Other", "True", "B", "b")],
        generation=1,
        now=T0,
    )
    again = merge_conditions(both, [Condition("Ready", "True", "A", "a")], generation=1, now=T1)
    assert [c["type"] for c in again] == ["Ready", "Other"]
    dropped = merge_conditions(
        both, [Condition("Ready", "True", "A", "a")], generation=1, now=T1, drop=["Other"]
    )
    assert [c["type"] for c in dropped] == ["Ready"]


def test_times_must_be_aware() -> None:
    assert rfc3339(datetime(2026, 1, 1, 1, 0, 0, 999, tzinfo=UTC)) == "2026-01-01T01:00:00Z"
    with pytest.raises(ValueError, match="timezone"):
        rfc3339(datetime(2026, 1, 1))


# Clusters


def test_a_cluster_becomes_ready_when_every_broker_is() -> None:
    spec = parse_cluster(body("Cluster", {"brokers": 3}, name="events"))
    starting = cluster_status(spec, ClusterObservation(3, 1), None, now=T0)
    assert ready(starting) == ("False", "BrokersNotReady", "2026-01-01T00:00:00Z")
    assert condition(starting, "Ready") is not None
    assert starting["bootstrap"] == "http://events.streaming.svc:9092"
    assert (starting["brokers"], starting["readyBrokers"]) == (3, 1)
    still = cluster_status(spec, ClusterObservation(3, 2), starting, now=T1)
    assert ready(still) == ("False", "BrokersNotReady", "2026-01-01T00:00:00Z")
    done = cluster_status(spec, ClusterObservation(3, 3), still, now=T2)
    assert ready(done) == ("True", "BrokersReady", "2026-01-01T00:02:00Z")
    valid("Cluster", {"brokers": 3}, done)


def test_a_scaling_cluster_is_not_ready() -> None:
    spec = parse_cluster(body("Cluster", {"brokers": 4}, generation=2))
    status = cluster_status(spec, ClusterObservation(3, 3), None, now=T0)
    assert ready(status)[:2] == ("False", "Scaling")
    assert status["observedGeneration"] == 2


def test_a_cluster_problem_wins_over_ready_pods() -> None:
    spec = parse_cluster(body("Cluster", {"brokers": 1}))
    problem = Problem("ApplyFailed", "the StatefulSet was refused")
    status = cluster_status(spec, ClusterObservation(1, 1), None, now=T0, problem=problem)
    assert ready(status)[:2] == ("False", "ApplyFailed")


# Topics

TOPIC = {"cluster": "events", "partitions": 3}


def test_a_placed_topic_is_ready_and_says_where_its_partitions_live() -> None:
    spec = parse_topic(body("Topic", TOPIC, name="orders", generation=2))
    status = topic_status(spec, None, now=T0, placement={0: 1, 1: 2, 2: 0}, topic_id="t-1")
    assert status == valid(
        "Topic",
        TOPIC,
        {
            "observedGeneration": 2,
            "topicName": "orders",
            "topicId": "t-1",
            "partitions": 3,
            "placement": [
                {"partition": 0, "replicas": [1]},
                {"partition": 1, "replicas": [2]},
                {"partition": 2, "replicas": [0]},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Placed",
                    "message": "3 partitions placed and served",
                    "observedGeneration": 2,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    assert placement_from_status(status) == {0: 1, 1: 2, 2: 0}


def test_placement_survives_unreachable_brokers() -> None:
    spec = parse_topic(body("Topic", TOPIC))
    placed = topic_status(spec, None, now=T0, placement={0: 0, 1: 1, 2: 2}, topic_id="t-1")
    failed = topic_status(spec, placed, now=T1, problem=UNREACHABLE)
    assert ready(failed)[:2] == ("False", "BrokersUnavailable")
    for key in ("placement", "partitions", "topicId", "topicName"):
        assert failed[key] == placed[key], key
    recovered = topic_status(spec, failed, now=T2, placement=placement_from_status(failed))
    assert ready(recovered) == ("True", "Placed", "2026-01-01T00:02:00Z")
    assert recovered["topicId"] == "t-1"


def test_a_growing_topic_is_not_ready_until_every_partition_is_placed() -> None:
    spec = parse_topic(body("Topic", {**TOPIC, "partitions": 6}, generation=2))
    status = topic_status(spec, None, now=T0, placement={0: 0, 1: 1, 2: 2})
    assert ready(status)[:2] == ("False", "Placing")


def test_replication_is_not_supported_yet() -> None:
    spec = parse_topic(body("Topic", {**TOPIC, "replicationFactor": 3}))
    unsupported = unsupported_changes(spec, None)
    assert [p.reason for p in unsupported] == ["ReplicationNotSupported"]
    # The topic is still served, with one copy of each partition.
    status = topic_status(spec, None, now=T0, placement={0: 0, 1: 1, 2: 2}, unsupported=unsupported)
    assert ready(status)[:2] == ("False", "NotSupported")
    not_supported = condition(status, "NotSupported")
    assert not_supported is not None
    assert not_supported["status"] == "True"
    assert not_supported["reason"] == "ReplicationNotSupported"
    assert "only 1 is served" in not_supported["message"]
    valid("Topic", {**TOPIC, "replicationFactor": 3}, status)


def test_a_partition_decrease_is_reported_then_cleared_when_undone() -> None:
    grown = parse_topic(body("Topic", {**TOPIC, "partitions": 6}))
    placed = topic_status(grown, None, now=T0, placement={p: p % 3 for p in range(6)})
    shrunk = parse_topic(body("Topic", {**TOPIC, "partitions": 4}, generation=2))
    unsupported = unsupported_changes(shrunk, placed)
    assert [p.reason for p in unsupported] == ["PartitionDecrease"]
    refused = topic_status(shrunk, placed, now=T1, unsupported=unsupported)
    assert refused["partitions"] == 6  # still what the brokers serve
    assert ready(refused)[:2] == ("False", "NotSupported")
    assert "6 exist, 4 asked" in str(condition(refused, "NotSupported"))
    undone = parse_topic(body("Topic", {**TOPIC, "partitions": 6}, generation=3))
    assert unsupported_changes(undone, refused) == []
    back = topic_status(undone, refused, now=T2, placement=placement_from_status(refused))
    assert condition(back, "NotSupported") is None
    assert ready(back)[:2] == ("True", "Placed")
    assert back["observedGeneration"] == 3


def test_a_topic_cannot_be_renamed() -> None:
    spec = parse_topic(body("Topic", {**TOPIC, "topicName": "orders.v2"}, name="orders"))
    problems = unsupported_changes(spec, {"topicName": "orders"})
    assert [p.reason for p in problems] == ["TopicNameChange"]
    status = topic_status(spec, {"topicName": "orders"}, now=T0, unsupported=problems)
    assert status["topicName"] == "orders"


@pytest.mark.parametrize(
    "entry", [{"partition": 0, "replicas": []}, {"partition": "0", "replicas": [1]}, {}]
)
def test_a_malformed_placement_is_refused(entry: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        placement_from_status({"placement": [entry]})


# Consumer groups

GROUP = {"cluster": "events"}
# docs/consumer-groups.md's description, with a partition that has no commit yet.
DESCRIBED = {
    "group": "billing",
    "state": "Stable",
    "protocol_type": "consumer",
    "protocol": "cooperative-sticky",
    "generation": 7,
    "leader": "billing-3f2a",
    "members": [
        {
            "member_id": "billing-3f2a",
            "client_id": "worker-1",
            "client_host": "127.0.0.1",
            "session_timeout_ms": 10000,
            "assignment": [{"topic": "orders", "partitions": [0, 1]}],
        }
    ],
    "offsets": [
        {"topic": "orders", "partition": 0, "committed": 120, "log_end_offset": 130, "lag": 10},
        {"topic": "orders", "partition": 1, "committed": None, "log_end_offset": 9, "lag": None},
        {"topic": "audit", "partition": 0, "committed": 5, "log_end_offset": 7, "lag": 2},
        {"topic": "audit", "partition": 1, "committed": 9, "log_end_offset": 7, "lag": -2},
    ],
    "lag": 10,
}


def test_group_status_from_the_brokers_description() -> None:
    spec = parse_group(body("ConsumerGroup", GROUP, name="billing"))
    status = valid("ConsumerGroup", GROUP, group_status(spec, DESCRIBED, None, now=T0))
    assert status["state"] == "Stable"
    assert status["members"] == 1
    # Partitions without a commit have no lag; a negative one (truncated log) counts as 0.
    assert status["topics"] == [{"topic": "audit", "lag": 2}, {"topic": "orders", "lag": 10}]
    assert status["lag"] == 12
    assert status["lastRefreshTime"] == "2026-01-01T00:00:00Z"
    assert ready(status)[:2] == ("True", "Described")


def test_a_group_the_broker_does_not_know_is_empty() -> None:
    spec = parse_group(body("ConsumerGroup", GROUP))
    status = group_status(spec, None, None, now=T0)
    assert (status["state"], status["members"], status["lag"], status["topics"]) == (
        "Empty", 0, 0, []
    )  # fmt: skip
    valid("ConsumerGroup", GROUP, status)


def test_an_unreachable_cluster_leaves_the_last_numbers() -> None:
    spec = parse_group(body("ConsumerGroup", GROUP))
    seen = group_status(spec, DESCRIBED, None, now=T0)
    lost = valid("ConsumerGroup", GROUP, group_status_unavailable(spec, UNREACHABLE, seen, now=T1))
    assert lost["state"] == "Unknown"
    assert (lost["members"], lost["lag"], lost["lastRefreshTime"]) == (1, 12, rfc3339(T0))
    assert ready(lost)[:2] == ("False", "BrokersUnavailable")
    back = group_status(spec, DESCRIBED, lost, now=T2)
    assert ready(back) == ("True", "Described", rfc3339(T2))


def test_a_lag_a_broker_could_not_give_keeps_the_last_known_one() -> None:
    spec = parse_group(body("ConsumerGroup", GROUP))
    seen = group_status(spec, DESCRIBED, None, now=T0)
    rows = [dict(row) for row in DESCRIBED["offsets"]]
    rows[0].update(log_end_offset=None, lag=None)  # committed, but its broker did not answer
    partial = group_status(spec, {**DESCRIBED, "offsets": rows}, seen, now=T1)
    assert (partial["lag"], partial["topics"]) == (seen["lag"], seen["topics"])
    assert partial["lastRefreshTime"] == rfc3339(T1)


RESET = {**GROUP, "offsetReset": {"to": "earliest", "topics": ["orders"]}}


def test_an_offset_reset_is_applied_once_per_generation() -> None:
    spec = parse_group(body("ConsumerGroup", RESET, generation=4))
    status = group_status(spec, None, None, now=T0)
    assert offset_reset_due(spec, status)
    refused = offset_reset_refused(
        spec, Problem("GroupNotEmpty", "1 member is live: stop the consumers"), status, now=T0
    )
    assert offset_reset_due(spec, refused)
    reset = condition(refused, "OffsetResetApplied")
    assert reset is not None and reset["status"] == "False"
    answer = [{"topic": "orders", "partition": 0, "offset": 0, "metadata": ""}]
    applied = valid("ConsumerGroup", RESET, offset_reset_applied(spec, answer, refused, now=T1))
    assert applied["offsetReset"] == {
        "generation": 4,
        "appliedTime": rfc3339(T1),
        "offsets": [{"topic": "orders", "partition": 0, "offset": 0}],
    }
    assert not offset_reset_due(spec, applied)
    assert condition(applied, "Ready") is not None  # other conditions stay
    # The next refresh keeps what the reset recorded.
    refreshed = group_status(spec, None, applied, now=T2)
    assert refreshed["offsetReset"] == applied["offsetReset"]
    assert not offset_reset_due(spec, refreshed)
    changed = parse_group(body("ConsumerGroup", RESET, generation=5))
    assert offset_reset_due(changed, refreshed)


def test_no_reset_no_reset_due() -> None:
    spec = parse_group(body("ConsumerGroup", GROUP))
    assert not offset_reset_due(spec, None)


def test_pending_work_asks_for_an_early_refresh_but_a_refusal_does_not() -> None:
    spec = parse_group(body("ConsumerGroup", RESET, generation=2))
    assert group_refresh_pending(spec, None)
    described = group_status(spec, DESCRIBED, None, now=T0)
    assert group_refresh_pending(spec, described)  # the reset was not tried yet
    refused = offset_reset_refused(spec, Problem("GroupNotEmpty", "live"), described, now=T0)
    assert not group_refresh_pending(spec, refused)  # tried again at the regular interval
    plain = parse_group(body("ConsumerGroup", GROUP, generation=2))
    assert not group_refresh_pending(plain, group_status(plain, None, None, now=T0))


# Refresh rate


def test_refresh_schedule() -> None:
    schedule = RefreshSchedule(interval=timedelta(seconds=30), min_interval=timedelta(seconds=5))
    assert schedule.due(None, T0, pending=False)
    assert schedule.delay(T0, T0 + timedelta(seconds=10), pending=False) == 20
    assert schedule.delay(T0, T0 + timedelta(seconds=2), pending=True) == 3
    assert schedule.due(T0, T0 + timedelta(seconds=5), pending=True)
    assert schedule.due(T0, T0 + timedelta(seconds=30), pending=False)
    assert schedule.due(T0, T0 - timedelta(hours=1), pending=False)  # the clock went back
    status = {"lastRefreshTime": "2026-01-01T00:00:00Z"}
    assert last_refresh(status) == T0
    assert last_refresh({}) is None


@pytest.mark.parametrize(("interval", "least"), [(5, 10), (5, 0), (5, -1)])
def test_refresh_schedule_bounds_are_checked(interval: int, least: int) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        RefreshSchedule(timedelta(seconds=interval), timedelta(seconds=least))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=20_000), st.booleans()), max_size=80))
def test_refreshes_never_come_faster_than_the_bound(events: list[tuple[int, bool]]) -> None:
    # However events arrive, pending or not, refreshes are at least min_interval apart, and
    # no refresh is skipped once the regular interval has passed.
    schedule = RefreshSchedule()
    last: datetime | None = None
    now = T0
    for gap_ms, pending in events:
        now += timedelta(milliseconds=gap_ms)
        if schedule.due(last, now, pending=pending):
            assert last is None or now - last >= schedule.min_interval
            last = now
        else:
            assert last is not None and now - last < schedule.interval
