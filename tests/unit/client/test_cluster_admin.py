"""The admin client's reading of ``GET /v1/cluster`` and its paths (the round trip against
real brokers is tests/integration/test_cluster_admin.py)."""

from __future__ import annotations

import pytest

from millstream import errors
from millstream.client.broker_metadata import BrokerMetadata, PlacedTopic
from millstream.client.cluster_admin import admin_topic_path


def test_a_standalone_broker_has_no_metadata() -> None:
    found = BrokerMetadata.from_json({"mode": "standalone", "broker_id": 2, "epoch": None})
    assert found == BrokerMetadata(2)
    assert not found.managed


def test_a_broker_of_a_cluster_lists_brokers_and_placements() -> None:
    found = BrokerMetadata.from_json(
        {
            "mode": "cluster",
            "broker_id": 0,
            "epoch": 3,
            "brokers": [{"id": 0, "url": "http://a"}, {"id": 1, "url": "http://b"}],
            "topics": [
                {
                    "name": "t",
                    "partitions": 2,
                    "topic_id": "x",
                    "placement": {"0": 1, "1": 0},
                    "epoch": 4,
                },
                # From a broker too old to say its topics' epochs.
                {"name": "u", "partitions": 1, "topic_id": None, "placement": {"0": 0}},
            ],
        }
    )
    assert found.managed and found.epoch == 3
    assert found.brokers == {0: "http://a", 1: "http://b"}
    assert found.topics == {
        "t": PlacedTopic("t", 2, {0: 1, 1: 0}, "x", epoch=4),
        "u": PlacedTopic("u", 1, {0: 0}, None),
    }


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"mode": "cluster", "broker_id": 0, "epoch": 1, "brokers": [{"id": 0}], "topics": []},
        {"mode": "cluster", "broker_id": 0, "epoch": 1, "brokers": [], "topics": [{"name": "t"}]},
    ],
)
def test_malformed_metadata_is_an_error(body: object) -> None:
    with pytest.raises(errors.MillstreamError, match="unexpected cluster metadata"):
        BrokerMetadata.from_json(body)


def test_topic_names_are_escaped_in_admin_paths() -> None:
    assert admin_topic_path("orders") == "/v1/admin/topics/orders"
    assert admin_topic_path("a/b") == "/v1/admin/topics/a%2Fb"
