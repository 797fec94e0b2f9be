"""cluster.json: written whole, read back the same, refused when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from millstream.broker.cluster.metadata import BrokerInfo, ClusterMetadata, TopicPlacement
from millstream.broker.cluster.store import CLUSTER_FILE, MetadataStore, Stored


def test_nothing_stored_is_a_standalone_broker(tmp_path: Path) -> None:
    assert MetadataStore(tmp_path).load() is None


def test_metadata_round_trips(tmp_path: Path) -> None:
    metadata = ClusterMetadata(
        7,
        (BrokerInfo(0, "http://a:9092"), BrokerInfo(1, "http://b:9092")),
        {
            "orders": TopicPlacement("orders", 2, {"retention.ms": 1000}, (1, 0), "uid-1", 3),
            "plain": TopicPlacement("plain", 1, {}, (0,)),
        },
    )
    store = MetadataStore(tmp_path)
    store.save(1, metadata)
    assert store.load() == Stored(1, metadata)
    stored = json.loads((tmp_path / CLUSTER_FILE).read_text())
    assert stored["version"] == 1 and stored["topics"]["orders"]["placement"] == [1, 0]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "content", [b"{", b'{"version": 1}', b'{"version": 9, "broker_id": 0}', b"[]"]
)
def test_a_damaged_file_is_refused_not_guessed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CLUSTER_FILE).write_bytes(content)
    with pytest.raises(ValueError):
        MetadataStore(tmp_path).load()
