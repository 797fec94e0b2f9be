"""The reconcile decisions of millstream.operator.plan and .cluster_plan: placements that
never move a placed partition, adoption of topics the brokers already hold, one Topic per
topic, scale-in kept back while brokers serve partitions, immutable storage, cluster pushes
whose epoch no broker refuses, and drift found from the brokers' metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from millstream.client.broker_metadata import BrokerMetadata, PlacedTopic
from millstream.operator import cluster_plan, plan
from millstream.operator.placement import broker_loads, place, topic_offset
from millstream.operator.resources import statefulset
from millstream.operator.specs import parse_cluster, parse_topic
from millstream.operator.status import ClusterObservation, Problem, condition, topic_status
from tests.unit.operator.support import body

NOW = datetime(2026, 1, 1, tzinfo=UTC)
URLS = {0: "http://b0", 1: "http://b1"}


def topic(spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return body("Topic", {"cluster": "events", **spec}, **kwargs)


def placed_status(
    placement: dict[int, int], topic_id: str = "id-1", **extra: Any
) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "topicName": "example",
        "topicId": topic_id,
        "partitions": len(placement),
        "placement": [{"partition": p, "replicas": [b]} for p, b in sorted(placement.items())],
        **extra,
    }


def annotated(resource: dict[str, Any], cluster: str = "events") -> dict[str, Any]:
    resource["metadata"]["annotations"] = {plan.PLACED_ON_ANNOTATION: cluster}
    return resource


def view(
    epoch: int | None = 1, brokers: dict[int, str] | None = None, **topics: PlacedTopic
) -> BrokerMetadata:
    return BrokerMetadata(0, epoch, URLS if brokers is None else brokers, topics)


# --- grow_placement ----------------------------------------------------------------------


def test_a_topic_the_operator_placed_grows_as_place_says() -> None:
    before = place(3, [0, 1], offset=5)
    assert plan.grow_placement(7, [0, 1], before, offset=5) == place(7, [0, 1], before, offset=5)


def test_an_unbalanced_topic_keeps_its_partitions_and_fills_the_least_loaded() -> None:
    # Adopted from a standalone broker: everything on broker 0. Balance would move two.
    current = {0: 0, 1: 0, 2: 0}
    grown = plan.grow_placement(5, [0, 1], current, offset=0)
    assert {p: grown[p] for p in current} == current
    assert grown[3] == 1 and grown[4] == 1


def test_partitions_on_a_broker_that_left_stay_there() -> None:
    grown = plan.grow_placement(4, [0, 1], {0: 0, 1: 1, 2: 2}, offset=0)
    assert grown[2] == 2
    assert grown[3] in (0, 1)


@given(
    partitions=st.integers(min_value=1, max_value=40),
    extra=st.integers(min_value=0, max_value=20),
    brokers=st.sets(st.integers(min_value=0, max_value=9), min_size=1, max_size=5).map(sorted),
    placed_on=st.lists(st.integers(min_value=0, max_value=12), max_size=40),
    offset=st.integers(min_value=0, max_value=2**32),
)
def test_no_placed_partition_ever_moves(
    partitions: int, extra: int, brokers: list[int], placed_on: list[int], offset: int
) -> None:
    current = dict(enumerate(placed_on[:partitions]))
    grown = plan.grow_placement(partitions + extra, brokers, current, offset=offset)
    assert sorted(grown) == list(range(partitions + extra))
    assert {p: grown[p] for p in current} == current
    new = {p: b for p, b in grown.items() if p not in current}
    assert set(new.values()) <= set(brokers)


# --- adoption ------------------------------------------------------------------------------


def test_the_copy_with_most_partitions_is_the_existing_topic() -> None:
    small = PlacedTopic("t", 2, {0: 0, 1: 1}, "id")
    large = PlacedTopic("t", 3, {0: 0, 1: 1, 2: 0}, "id")
    assert plan.existing_topic("t", [view(t=small), None, view(t=large)]) == large
    assert plan.existing_topic("u", [view(t=small)]) is None


def test_the_copy_with_the_highest_epoch_is_the_existing_topic_whole() -> None:
    # A switch pushed to some brokers only: the others keep the placement from before it, at
    # the older epoch, even if they hold more partitions (a grow they took and it missed).
    before = PlacedTopic("t", 3, {0: 0, 1: 0, 2: 1}, "id", epoch=2)
    switched = PlacedTopic("t", 2, {0: 1, 1: 0}, "id", epoch=3)
    unmoved = PlacedTopic("t", 4, dict.fromkeys(range(4), 0), "id")
    views = [view(t=before), view(t=switched), view(t=unmoved)]
    assert plan.existing_topic("t", views) == switched
    assert plan.existing_topic("t", list(reversed(views))) == switched
    # No epoch is lower than any; among equal epochs, the most partitions.
    assert plan.existing_topic("t", [view(t=unmoved), view(t=before)]) == before
    grown = PlacedTopic("t", 3, {0: 1, 1: 0, 2: 1}, "id", epoch=3)
    assert plan.existing_topic("t", [view(t=switched), view(t=grown)]) == grown


def test_a_standalone_topic_is_held_whole_by_one_broker() -> None:
    whole = {"partitions": [{"partition": p, "latest_offset": 3} for p in range(3)]}
    placed = {"partitions": [{"partition": 0, "broker": 1, "latest_offset": None}]}
    found = plan.standalone_topic("t", {0: None, 1: placed, 2: whole})
    assert found == PlacedTopic("t", 3, {0: 2, 1: 2, 2: 2})
    assert plan.standalone_topic("t", {0: None, 1: placed}) is None


def whole(n: int, records: int = 1) -> dict[str, Any]:
    return {"partitions": [{"partition": p, "latest_offset": records} for p in range(n)]}


def test_two_standalone_copies_go_to_the_larger_then_the_lower_id() -> None:
    assert plan.standalone_topic("t", {3: whole(2), 1: whole(2)}).placement == {0: 1, 1: 1}  # type: ignore[union-attr]
    assert plan.standalone_topic("t", {3: whole(4), 1: whole(2)}).partitions == 4  # type: ignore[union-attr]
    # A copy holding records stays whole where it is, even beside empty ones.
    found = plan.standalone_topic("t", {0: whole(2, records=0), 1: whole(2)})
    assert found is not None and found.placement == {0: 1, 1: 1}


def test_empty_standalone_copies_are_spread_as_a_new_topic() -> None:
    # Every broker of a new cluster creates the group-offsets topic while standalone.
    empty = {b: whole(16, records=0) for b in range(3)}
    found = plan.standalone_topic("__group_offsets", empty)
    assert found == PlacedTopic(
        "__group_offsets", 16, place(16, [0, 1, 2], offset=topic_offset("__group_offsets"))
    )
    # Over the brokers holding an empty copy of the largest size only.
    found = plan.standalone_topic("t", {0: whole(2, records=0), 1: whole(4, records=0)})
    assert found is not None and found.placement == dict.fromkeys(range(4), 1)


# --- plan_topic ----------------------------------------------------------------------------


def test_a_new_topic_is_placed_by_place_with_the_resource_uid_as_id() -> None:
    spec = parse_topic(topic({"partitions": 4}))
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=None)
    assert decided.target is not None and not decided.adopted and decided.unsupported == ()
    assert decided.target.placement == place(4, [0, 1], offset=topic_offset("example"))
    assert decided.target.topic_id == spec.meta.uid
    assert decided.target.name == "example"


def test_a_topic_the_brokers_hold_is_adopted_with_its_placement_and_id() -> None:
    spec = parse_topic(topic({"partitions": 3}))
    held = PlacedTopic("example", 2, {0: 1, 1: 1}, "old-id")
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=held)
    assert decided.adopted and decided.target is not None
    assert decided.target.topic_id == "old-id"
    assert {p: decided.target.placement[p] for p in (0, 1)} == {0: 1, 1: 1}
    assert decided.target.partitions == 3


def test_an_adopted_topic_takes_the_highest_epoch_the_brokers_hold() -> None:
    # A Retain Topic deleted after a move, or the internal Topic re-created: the brokers hold
    # the topic at epoch 3 (one of them missed the last switch), the new Topic has no status.
    spec = parse_topic(topic({"partitions": 2}))
    behind = PlacedTopic("example", 2, {0: 1, 1: 1}, "old-id", epoch=2)
    switched = PlacedTopic("example", 2, {0: 1, 1: 0}, "old-id", epoch=3)
    held = plan.existing_topic("example", [view(example=behind), view(example=switched)])
    assert held == switched  # the placement that epoch was set for, with it
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=held)
    assert decided.adopted and decided.target is not None and decided.target.epoch == 3
    assert decided.target.placement == {0: 1, 1: 0}
    status = topic_status(spec, None, now=NOW, placement=decided.target.placement, epoch=3)
    assert status["epoch"] == 3  # so the next switch pushes 4, which the brokers take
    # A status that has an epoch keeps it; a topic the brokers hold without one has none.
    placed = placed_status({0: 1, 1: 0}, epoch=5)
    decided = plan.plan_topic(spec, placed, placed_on="events", brokers=[0, 1], existing=held)
    assert decided.target is not None and decided.target.epoch == 5
    unmoved = PlacedTopic("example", 2, {0: 1, 1: 0}, "old-id")
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=unmoved)
    assert decided.target is not None and decided.target.epoch is None


def test_status_wins_over_what_the_brokers_hold() -> None:
    spec = parse_topic(topic({"partitions": 2}))
    status = placed_status({0: 0, 1: 1}, topic_id="mine")
    held = PlacedTopic("example", 2, {0: 1, 1: 0}, "theirs")
    decided = plan.plan_topic(spec, status, placed_on="events", brokers=[0, 1], existing=held)
    assert decided.target is not None and not decided.adopted
    assert decided.target.placement == {0: 0, 1: 1}
    assert decided.target.topic_id == "mine"


def test_a_decrease_keeps_the_partitions_that_exist() -> None:
    spec = parse_topic(topic({"partitions": 1, "config": {"retention.ms": 1000}}))
    decided = plan.plan_topic(
        spec, placed_status({0: 0, 1: 1}), placed_on="events", brokers=[0, 1], existing=None
    )
    assert [p.reason for p in decided.unsupported] == ["PartitionDecrease"]
    assert decided.target is not None and decided.target.placement == {0: 0, 1: 1}
    assert decided.target.config == {"retention.ms": 1000}  # settings still apply


def test_a_decrease_below_what_an_adopted_topic_has_is_refused_too() -> None:
    spec = parse_topic(topic({"partitions": 1}))
    held = PlacedTopic("example", 3, {0: 0, 1: 1, 2: 0}, "old")
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=held)
    assert [p.reason for p in decided.unsupported] == ["PartitionDecrease"]
    assert decided.target is not None and decided.target.partitions == 3


def test_replication_is_reported_and_the_topic_served_with_one_copy() -> None:
    spec = parse_topic(topic({"partitions": 2, "replicationFactor": 3}))
    decided = plan.plan_topic(spec, None, placed_on=None, brokers=[0, 1], existing=None)
    assert [p.reason for p in decided.unsupported] == ["ReplicationNotSupported"]
    assert decided.target is not None
    status = topic_status(
        spec, None, now=NOW, placement=decided.target.placement, unsupported=decided.unsupported
    )
    assert condition(status, "NotSupported")["status"] == "True"  # type: ignore[index]


def test_moving_a_topic_to_another_cluster_or_name_pushes_nothing() -> None:
    spec = parse_topic(topic({"partitions": 2}))
    moved = plan.plan_topic(
        spec, placed_status({0: 0, 1: 1}), placed_on="other", brokers=[0, 1], existing=None
    )
    assert moved.target is None
    assert [p.reason for p in moved.unsupported] == ["ClusterChange"]

    renamed = parse_topic(topic({"partitions": 2, "topicName": "Renamed"}))
    decided = plan.plan_topic(
        renamed, placed_status({0: 0, 1: 1}), placed_on="events", brokers=[0, 1], existing=None
    )
    assert decided.target is None
    assert [p.reason for p in decided.unsupported] == ["TopicNameChange"]


# --- one Topic per topic -------------------------------------------------------------------


def test_the_placed_then_the_oldest_topic_keeps_a_name() -> None:
    old = topic({}, name="a")
    old["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    new = topic({"topicName": "a"}, name="b")
    new["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    everyone = [old, new]
    assert plan.topic_taken(old, everyone) is None
    taken = plan.topic_taken(new, everyone)
    assert taken is not None and taken.reason == "TopicNameTaken" and "'a'" in taken.message

    # Once placed, the newer one keeps it.
    new["status"] = placed_status({0: 0}) | {"topicName": "a"}
    assert plan.topic_taken(new, everyone) is None
    assert plan.topic_taken(old, everyone) is not None


def test_the_same_name_on_another_cluster_is_no_conflict() -> None:
    mine = topic({}, name="a")
    theirs = body("Topic", {"cluster": "other"}, name="a-too")
    theirs["spec"]["topicName"] = "a"
    assert plan.topic_taken(mine, [mine, theirs]) is None


# --- the cluster's brokers -------------------------------------------------------------------


def test_brokers_that_serve_partitions_are_kept_past_spec_brokers() -> None:
    assert cluster_plan.statefulset_replicas(3, [{0: 0, 1: 1}]) == (3, None)
    replicas, problem = cluster_plan.statefulset_replicas(2, [{0: 0, 1: 3}, {0: 2}])
    assert replicas == 4
    assert (
        problem is not None and problem.reason == "ScaleInBlocked" and "[2, 3]" in problem.message
    )


def test_placements_on_reads_only_the_topics_of_that_cluster() -> None:
    here = annotated(topic({}, name="a", status=placed_status({0: 1})))
    elsewhere = annotated(topic({}, name="b", status=placed_status({0: 5})), cluster="other")
    unplaced = topic({}, name="c")
    assert plan.placements_on("events", [here, elsewhere, unplaced]) == [{0: 1}, {}]


def cluster_spec(**spec: Any) -> Any:
    return parse_cluster(body("Cluster", spec, name="events"))


def test_storage_of_an_existing_statefulset_is_kept_and_the_change_reported() -> None:
    desired = statefulset(cluster_spec(storage={"size": "20Gi"}), default_image="img")
    existing = statefulset(
        cluster_spec(storage={"size": "10Gi", "storageClassName": "ssd"}), default_image="img"
    )
    manifest, problem = cluster_plan.keep_storage(desired, existing)
    claim = manifest["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "10Gi"
    assert claim["storageClassName"] == "ssd"
    assert problem is not None and problem.reason == "StorageChangeNotApplied"
    assert (
        desired["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        == "20Gi"
    )

    assert cluster_plan.keep_storage(desired, None) == (desired, None)
    assert cluster_plan.keep_storage(desired, desired) == (desired, None)


def test_a_statefulset_counts_its_pods() -> None:
    assert cluster_plan.observe_statefulset(None) == ClusterObservation(0, 0)
    assert cluster_plan.observe_statefulset({"status": {"replicas": 3}}) == ClusterObservation(3, 0)
    counted = {"status": {"replicas": 3, "readyReplicas": 2}}
    assert cluster_plan.observe_statefulset(counted) == ClusterObservation(3, 2)


def test_unsupported_cluster_changes_are_a_condition_of_their_own() -> None:
    spec = cluster_spec(brokers=2)
    storage = Problem("StorageChangeNotApplied", "volumes stay 10Gi")
    status = cluster_plan.cluster_status_with(
        spec, ClusterObservation(2, 2), None, now=NOW, unsupported=[storage]
    )
    assert condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(status, "NotSupported")["reason"] == "StorageChangeNotApplied"  # type: ignore[index]
    cleared = cluster_plan.cluster_status_with(spec, ClusterObservation(2, 2), status, now=NOW)
    assert condition(cleared, "NotSupported") is None


# --- cluster pushes --------------------------------------------------------------------------


def test_the_cluster_is_pushed_to_brokers_without_it_with_a_newer_epoch() -> None:
    standalone = BrokerMetadata(1)
    assert cluster_plan.cluster_push(
        {0: view(epoch=4), 1: standalone}, URLS
    ) == cluster_plan.ClusterPush(5, (1,))
    assert cluster_plan.cluster_push({0: view(epoch=4), 1: view(epoch=4)}, URLS) is None
    grown = {**URLS, 2: "http://b2"}
    assert cluster_plan.cluster_push(
        {0: view(epoch=4), 1: None, 2: standalone}, grown
    ) == cluster_plan.ClusterPush(5, (0, 2))
    assert cluster_plan.cluster_push({0: None}, URLS) is None  # nobody to push to


def test_brokers_not_ready_says_who_and_why() -> None:
    assert cluster_plan.brokers_not_ready({0: view(), 1: view()}, URLS) is None
    problem = cluster_plan.brokers_not_ready({0: None, 1: BrokerMetadata(1)}, URLS, {0: "refused"})
    assert problem is not None and problem.reason == "BrokersNotReady"
    assert "broker 0 did not answer: refused" in problem.message
    assert "[1]" in problem.message


# --- drift -------------------------------------------------------------------------------------


def test_drift_targets_come_from_settled_placed_topics_only() -> None:
    settled = annotated(
        topic({"config": {"retention.ms": 5000}}, name="a", status=placed_status({0: 0, 1: 1}))
    )
    settled["status"]["topicName"] = "a"
    moving = annotated(topic({}, name="b", generation=2, status=placed_status({0: 1})))
    deleting = annotated(topic({}, name="c", status=placed_status({0: 1})))
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    unplaced = topic({}, name="d")
    other = annotated(topic({}, name="e", status=placed_status({0: 1})), cluster="other")
    targets = plan.drift_targets("events", [settled, moving, deleting, unplaced, other])
    assert targets == [plan.TopicTarget("a", {0: 0, 1: 1}, {"retention.ms": 5000}, "id-1")]


def test_brokers_missing_or_changing_a_topic_get_it_pushed_again() -> None:
    target = plan.TopicTarget("t", {0: 0, 1: 1}, {}, "id")
    held = PlacedTopic("t", 2, {0: 0, 1: 1}, "id")
    moved = PlacedTopic("t", 2, {0: 1, 1: 0}, "id")
    recreated = PlacedTopic("t", 2, {0: 0, 1: 1}, "other-id")
    views = {
        0: view(t=held),
        1: view(),
        2: view(t=moved),
        3: view(t=recreated),
        4: None,
        5: BrokerMetadata(5),
    }
    assert plan.topic_pushes(views, [target]) == {1: [target], 2: [target], 3: [target]}
    assert plan.in_sync(held, target) and not plan.in_sync(None, target)


def test_loads_of_a_grown_adopted_topic_even_out_over_time() -> None:
    # Growing an adopted topic far enough brings it back to balance without moving anything.
    grown = plan.grow_placement(20, [0, 1], dict.fromkeys(range(4), 0), offset=0)
    assert broker_loads(grown, [0, 1]) == {0: 10, 1: 10}
