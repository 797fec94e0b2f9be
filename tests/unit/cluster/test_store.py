"""cluster.json: written whole, read back the same, refused when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from millstream.broker.cluster.metadata import BrokerInfo, ClusterMetadata, TopicPlacement
from millstream.broker.cluster.moves import Move, MoveState, Transfers
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


def test_moves_and_retired_copies_round_trip(tmp_path: Path) -> None:
    metadata = ClusterMetadata(2, (BrokerInfo(0, "http://a"), BrokerInfo(1, "http://b")))
    moves = {
        ("orders", 0): Move("orders", 0, 0, MoveState.COPYING, 1_000_000, created_ms=5),
        ("orders", 1): Move(
            "orders", 1, 0, MoveState.SWITCHING, None, 6, epoch=4, final_offset=120
        ),
        ("logs", 3): Move("logs", 3, 0, MoveState.FAILED, error="source gone"),
        ("logs", 4): Move("logs", 4, 0, MoveState.COMPLETED, completed_ms=9, source_released=True),
    }
    transfers = Transfers(moves, frozenset({("orders", 2)}))
    store = MetadataStore(tmp_path)
    store.save(1, metadata, transfers)
    assert store.load() == Stored(1, metadata, transfers)
    assert json.loads((tmp_path / CLUSTER_FILE).read_text())["version"] == 2


def test_a_version_1_file_has_no_moves(tmp_path: Path) -> None:
    body = {"version": 1, "broker_id": 0, "epoch": 3, "brokers": [{"id": 0, "url": "http://a"}]}
    (tmp_path / CLUSTER_FILE).write_text(json.dumps({**body, "topics": {}}))
    stored = MetadataStore(tmp_path).load()
    assert stored is not None and stored.metadata.epoch == 3
    assert stored.transfers == Transfers()


@pytest.mark.parametrize(
    "content", [b"{", b'{"version": 1}', b'{"version": 9, "broker_id": 0}', b"[]"]
)
def test_a_damaged_file_is_refused_not_guessed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CLUSTER_FILE).write_bytes(content)
    with pytest.raises(ValueError):
        MetadataStore(tmp_path).load()
