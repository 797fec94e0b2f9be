"""The client's routes: paths to routes, the cluster view, and the router's refreshes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from millstream import errors
from millstream.client.metadata import (
    BrokerRoute,
    ClusterView,
    GroupRoute,
    PartitionRoute,
    Router,
    route_of,
)
from millstream.client.transport import error_from_response, group_path, topic_path
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition

CLUSTER = {
    "mode": "cluster",
    "broker_id": 0,
    "epoch": 3,
    "brokers": [
        {"id": 2, "url": "http://c/"},
        {"id": 0, "url": "http://a"},
        {"id": 1, "url": "http://b"},
    ],
    "topics": [
        {"name": "t", "partitions": 3, "topic_id": None, "placement": {"0": 1, "1": 2, "2": 0}},
        {
            "name": GROUP_OFFSETS_TOPIC,
            "partitions": 4,
            "topic_id": None,
            "placement": {"0": 2, "1": 2, "2": 0, "3": 1},
        },
    ],
}


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (topic_path("t", "partitions", 2, "batches"), PartitionRoute("t", 2)),
        (topic_path("a/b c", "partitions", 0, "records"), PartitionRoute("a/b c", 0)),
        (topic_path("t", "partitions", 1, "offsets") + "?at=latest", PartitionRoute("t", 1)),
        (group_path("g"), GroupRoute("g")),
        (group_path("a/b", "offsets", "reset"), GroupRoute("a/b")),
        ("/v1/groups", None),
        ("/v1/topics", None),
        (topic_path("t"), None),
        (topic_path("t", "records"), None),
        ("/v1/cluster", None),
    ],
)
def test_a_path_says_its_route(path: str, route: Any) -> None:
    assert route_of(path) == route


def test_the_view_routes_partitions_groups_and_brokers() -> None:
    view = ClusterView.from_json(CLUSTER)
    assert view is not None
    assert view.url_for(PartitionRoute("t", 0)) == "http://b"
    assert view.url_for(PartitionRoute("t", 1)) == "http://c"
    assert view.url_for(PartitionRoute("t", 3)) is None
    assert view.url_for(PartitionRoute("other", 0)) is None
    assert view.url_for(BrokerRoute(0)) == "http://a"
    # A group goes to the broker serving its partition of the group-offsets topic.
    urls = {0: "http://c", 1: "http://c", 2: "http://a", 3: "http://b"}
    for group in ("billing", "x", "orders", "a", "b", "c"):
        expected = urls[group_offsets_partition(group, 4)]
        assert view.url_for(GroupRoute(group)) == expected
    assert {view.url_for(GroupRoute(f"g{i}")) for i in range(40)} == set(urls.values())
    unplaced = ClusterView(view.brokers, {"t": view.placement["t"]})
    assert unplaced.url_for(GroupRoute("billing")) is None  # to the bootstrap broker
    assert ClusterView.from_json({"mode": "standalone", "brokers": []}) is None
    with pytest.raises(errors.MillstreamError):
        ClusterView.from_json({"mode": "cluster", "brokers": "nope"})


class Fetches:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    async def __call__(self, url: str) -> Any:
        self.urls.append(url)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_metadata_is_fetched_once_lazily() -> None:
    fetch = Fetches(CLUSTER)
    router = Router("http://boot", fetch)
    assert await router.url_for(None) == "http://boot"
    assert fetch.urls == []
    assert await router.url_for(PartitionRoute("t", 2)) == "http://a"
    assert await router.url_for(GroupRoute("g")) in ("http://a", "http://b", "http://c")
    assert await router.url_for(PartitionRoute("new-topic", 0)) == "http://boot"
    assert await router.broker_ids() == [0, 1, 2]
    assert fetch.urls == ["http://boot"]


@pytest.mark.parametrize("answer", [{"mode": "standalone"}, errors.NotFound("old broker")])
async def test_a_standalone_broker_takes_everything(answer: Any) -> None:
    router = Router("http://boot", Fetches(answer))
    assert await router.url_for(PartitionRoute("t", 0)) == "http://boot"
    assert await router.url_for(GroupRoute("g")) == "http://boot"
    assert router.standalone and await router.broker_ids() == []


async def test_a_redirect_refreshes_and_follows_the_named_broker() -> None:
    moved = json.loads(json.dumps(CLUSTER))
    moved["topics"][0]["placement"]["0"] = 2
    fetch = Fetches(CLUSTER, CLUSTER)
    router = Router("http://boot", fetch)
    route = PartitionRoute("t", 0)
    assert await router.url_for(route) == "http://b"
    router._loaded_at = 0.0  # long ago, so the refresh is not skipped as too soon
    await router.misdirected(route, errors.BrokerAddress(2, "http://c/"))
    assert len(fetch.urls) == 2
    assert await router.url_for(route) == "http://c"  # the error knew better than the metadata


async def test_an_unreachable_broker_is_avoided_and_the_metadata_read_elsewhere() -> None:
    fetch = Fetches(CLUSTER, errors.BrokerUnavailable("down"), CLUSTER)
    router = Router("http://boot", fetch)
    await router.url_for(PartitionRoute("t", 0))
    router._loaded_at = 0.0
    assert await router.unreachable("http://boot", None)  # another broker may take it
    assert fetch.urls[1:] == ["http://a", "http://b"]  # the bootstrap broker last, if at all
    assert await router.url_for(None) == "http://a"
    # A partition's broker is the only one for it: nothing else to try.
    router._loaded_at = 0.0
    assert not await router.unreachable("http://b", PartitionRoute("t", 0))


async def test_the_metadata_comes_from_the_first_bootstrap_broker_that_answers() -> None:
    fetch = Fetches(errors.BrokerUnavailable("down"), CLUSTER)
    router = Router(["http://boot-1", "http://boot-2"], fetch)
    assert await router.url_for(PartitionRoute("t", 0)) == "http://b"
    assert fetch.urls == ["http://boot-1", "http://boot-2"]
    router._loaded_at = 0.0
    # One that stopped answering is passed over for requests that may go anywhere.
    assert await router.unreachable("http://boot-1", None)
    assert await router.url_for(None) == "http://boot-2"


async def test_no_broker_answering_is_an_error_only_when_nothing_is_known() -> None:
    router = Router("http://boot", Fetches(errors.BrokerUnavailable("down")))
    with pytest.raises(errors.BrokerUnavailable):
        await router.url_for(PartitionRoute("t", 0))
    await router.refresh(quiet=True)


def test_a_misdirected_error_names_the_broker() -> None:
    body = {
        "error": {
            "code": "not_leader",
            "message": "elsewhere",
            "broker": {"id": 2, "url": "http://c"},
        }
    }
    error = error_from_response(421, json.dumps(body).encode())
    assert isinstance(error, errors.NotLeader) and error.retriable
    assert error.broker == errors.BrokerAddress(2, "http://c")
    bare = error_from_response(421, b'{"error": {"code": "not_coordinator", "message": "m"}}')
    assert isinstance(bare, errors.NotCoordinator) and bare.broker is None
    assert isinstance(error_from_response(421, b"<html>"), errors.Misdirected)
