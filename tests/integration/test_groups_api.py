"""The consumer-group HTTP API on a real broker process: the protocol, fencing, durability,
administration and bad input. The Python client's group consumer is tested on top of this in
test_groups_client.py and test_group_chaos.py."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from millstream.consumer_protocol import encode_assignment
from tests.support.broker import BrokerProcess
from tests.support.http import Reply, call

PROTOCOLS = [{"name": "range", "metadata_base64": ""}]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        assert call("POST", f"{proc.url}/v1/topics", {"name": "t", "partitions": 2}).status == 201
        yield proc
    finally:
        proc.kill()


def post(broker: BrokerProcess, path: str, body: Any) -> Reply:
    return call("POST", f"{broker.url}/v1/groups/{path}", body)


def join(broker: BrokerProcess, group: str = "g", member_id: str = "", **extra: Any) -> Reply:
    body = {
        "member_id": member_id,
        "protocol_type": "consumer",
        "protocols": PROTOCOLS,
        "session_timeout_ms": 2000,
        "rebalance_timeout_ms": 2000,
        **extra,
    }
    return post(broker, f"{group}/join", body)


def lone_member(broker: BrokerProcess, group: str = "g") -> tuple[str, int]:
    """A single member joined and synced, owning both partitions of t: (member id, generation)."""
    joined = join(broker, group).json
    member, generation = joined["member_id"], joined["generation"]
    assignment = encode_assignment([("t", 0), ("t", 1)])
    synced = post(
        broker,
        f"{group}/sync",
        {
            "member_id": member,
            "generation": generation,
            "assignments": [{"member_id": member, "assignment_base64": b64(assignment)}],
        },
    )
    assert synced.status == 200, synced.body
    assert synced.json["assignment_base64"] == b64(assignment)
    return member, generation


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def commit(broker: BrokerProcess, member: str, generation: int, offset: int) -> Reply:
    body = {
        "member_id": member,
        "generation": generation,
        "offsets": [{"topic": "t", "partition": 0, "offset": offset, "metadata": "m"}],
    }
    return post(broker, "g/offsets", body)


def committed(broker: BrokerProcess, group: str = "g") -> dict[tuple[str, int], int]:
    offsets = call("GET", f"{broker.url}/v1/groups/{group}/offsets").json["offsets"]
    return {(o["topic"], o["partition"]): o["offset"] for o in offsets}


def test_a_member_joins_commits_and_the_group_describes_it(broker: BrokerProcess) -> None:
    call(
        "POST",
        f"{broker.url}/v1/topics/t/records",
        {"records": [{"value": "x", "partition": 0}] * 5},
    )
    member, generation = lone_member(broker)
    assert commit(broker, member, generation, 3).status == 204
    described = call("GET", f"{broker.url}/v1/groups/g").json
    assert described["state"] == "Stable" and described["generation"] == generation
    assert described["members"][0]["assignment"] == [{"topic": "t", "partitions": [0, 1]}]
    rows = {(r["topic"], r["partition"]): r for r in described["offsets"]}
    assert rows[("t", 0)] == {
        "topic": "t",
        "partition": 0,
        "committed": 3,
        "log_end_offset": 5,
        "lag": 2,
        "member_id": member,
    }
    assert rows[("t", 1)]["committed"] is None and rows[("t", 1)]["lag"] is None
    assert described["lag"] == 2
    listed = call("GET", f"{broker.url}/v1/groups").json["groups"]
    assert listed == [{"group": "g", "state": "Stable", "protocol_type": "consumer", "members": 1}]
    metrics = call("GET", f"{broker.url}/metrics").body.decode()
    assert 'millstream_group_lag{group="g",partition="0",topic="t"} 2.0' in metrics
    assert 'millstream_group_members{group="g"} 1.0' in metrics


def test_a_stale_members_commit_is_fenced(broker: BrokerProcess) -> None:
    first, generation = lone_member(broker)
    # A second member joins: the first must rejoin, and the generation moves on.
    waiting: dict[str, Reply] = {}
    newcomer = threading.Thread(target=lambda: waiting.update(r=join(broker)))
    newcomer.start()
    rejoined = None
    for _ in range(50):
        beat = post(broker, "g/heartbeat", {"member_id": first, "generation": generation})
        if beat.status == 409:
            assert beat.error_code == "rebalance_in_progress"
            rejoined = join(broker, member_id=first).json
            break
    newcomer.join()
    assert rejoined is not None and rejoined["generation"] == generation + 1
    stale = commit(broker, first, generation, 7)
    assert (stale.status, stale.error_code) == (409, "illegal_generation")
    stranger = commit(broker, "nobody", generation + 1, 7)
    assert (stranger.status, stranger.error_code) == (409, "unknown_member")
    anonymous = post(
        broker, "g/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": 1}]}
    )
    assert (anonymous.status, anonymous.error_code) == (409, "unknown_member")
    assert committed(broker) == {}  # nothing of the refused commits was stored


def test_commits_and_generations_survive_a_kill_9(broker: BrokerProcess) -> None:
    member, generation = lone_member(broker)
    assert commit(broker, member, generation, 42).status == 204
    broker.kill()
    broker.start()
    assert committed(broker) == {("t", 0): 42}
    # The group was Stable: its membership was stored with its generation, so the member
    # carries on, with the partitions it was given ...
    beat = post(broker, "g/heartbeat", {"member_id": member, "generation": generation})
    assert beat.status == 204, beat.body
    described = call("GET", f"{broker.url}/v1/groups/g").json
    assert described["state"] == "Stable" and described["generation"] == generation
    assert described["members"][0]["assignment"] == [{"topic": "t", "partitions": [0, 1]}]
    assert commit(broker, member, generation, 43).status == 204
    # ... and its generation number is not handed out again.
    assert join(broker, member_id=member).json["generation"] > generation


def test_a_group_killed_in_a_rebalance_has_its_members_join_again(broker: BrokerProcess) -> None:
    member, generation = lone_member(broker)
    joined = join(broker, "g", member).json  # a new generation, never synced: never Stable
    assert joined["generation"] > generation
    broker.kill()
    broker.start()
    beat = post(broker, "g/heartbeat", {"member_id": member, "generation": joined["generation"]})
    assert (beat.status, beat.error_code) == (409, "unknown_member")
    assert join(broker).json["generation"] > joined["generation"]


def test_commits_survive_a_graceful_restart_and_a_reset_moves_them(broker: BrokerProcess) -> None:
    call(
        "POST",
        f"{broker.url}/v1/topics/t/records",
        {"records": [{"value": "x", "partition": 1}] * 4},
    )
    offsets = [{"topic": "t", "partition": p, "offset": 1} for p in (0, 1)]
    assert post(broker, "g/offsets", {"offsets": offsets}).status == 204  # no members: allowed
    broker.stop()
    broker.start()
    assert committed(broker) == {("t", 0): 1, ("t", 1): 1}
    plan = post(broker, "g/offsets/reset", {"to": "latest", "dry_run": True}).json
    assert plan == {
        "offsets": [
            {"topic": "t", "partition": 0, "offset": 0},
            {"topic": "t", "partition": 1, "offset": 4},
        ],
        "dry_run": True,
    }
    assert committed(broker) == {("t", 0): 1, ("t", 1): 1}  # a dry run changes nothing
    post(broker, "g/offsets/reset", {"to": "earliest"})
    assert committed(broker) == {("t", 0): 0, ("t", 1): 0}
    explicit = [{"topic": "t", "partition": 1, "offset": 3}]
    post(broker, "g/offsets/reset", {"to": "offsets", "offsets": explicit})
    assert committed(broker) == {("t", 0): 0, ("t", 1): 3}


def test_resets_and_deletion_are_refused_while_members_are_live(broker: BrokerProcess) -> None:
    member, generation = lone_member(broker)
    commit(broker, member, generation, 1)
    for reply in (
        post(broker, "g/offsets/reset", {"to": "earliest"}),
        call("DELETE", f"{broker.url}/v1/groups/g"),
    ):
        assert (reply.status, reply.error_code) == (409, "group_not_empty")
    assert post(broker, "g/leave", {"member_id": member}).status == 204
    assert call("GET", f"{broker.url}/v1/groups/g").json["state"] == "Empty"
    assert call("DELETE", f"{broker.url}/v1/groups/g").status == 204
    gone = call("GET", f"{broker.url}/v1/groups/g")
    assert (gone.status, gone.error_code) == (404, "unknown_group")
    broker.kill()
    broker.start()
    assert call("GET", f"{broker.url}/v1/groups/g").status == 404  # deleted for good


def test_a_member_that_stops_heartbeating_is_evicted(broker: BrokerProcess) -> None:
    member, generation = lone_member(broker)  # session timeout: 2 s
    time.sleep(1.0)
    assert (
        post(broker, "g/heartbeat", {"member_id": member, "generation": generation}).status == 204
    )
    time.sleep(2.5)
    beat = post(broker, "g/heartbeat", {"member_id": member, "generation": generation})
    assert (beat.status, beat.error_code) == (409, "unknown_member")
    assert call("GET", f"{broker.url}/v1/groups/g").json["members"] == []


BAD: dict[str, tuple[str, Any, int, str]] = {
    # name: (path under /v1/groups/, body, status, code)
    "group id with a slash-like char": (
        "g%20x/join",
        {"protocol_type": "c", "protocols": PROTOCOLS},
        400,
        "invalid_group_id",
    ),
    "no protocols": (
        "g/join",
        {"protocol_type": "consumer", "protocols": []},
        400,
        "invalid_request",
    ),
    "no protocol type": ("g/join", {"protocols": PROTOCOLS}, 400, "invalid_request"),
    **{
        f"group instance id {what}": (
            "g/join",
            {"protocol_type": "c", "protocols": PROTOCOLS, "group_instance_id": value},
            400,
            "invalid_request",
        )
        for what, value in (("empty", ""), ("too long", "p" * 250), ("not a string", 7))
    },
    "duplicate protocols": (
        "g/join",
        {"protocol_type": "c", "protocols": PROTOCOLS * 2},
        400,
        "invalid_request",
    ),
    "metadata not base64": (
        "g/join",
        {"protocol_type": "c", "protocols": [{"name": "r", "metadata_base64": "!"}]},
        400,
        "invalid_request",
    ),
    "session too short": (
        "g/join",
        {"protocol_type": "c", "protocols": PROTOCOLS, "session_timeout_ms": 10},
        400,
        "invalid_session_timeout",
    ),
    "session too long": (
        "g/join",
        {"protocol_type": "c", "protocols": PROTOCOLS, "session_timeout_ms": 10**9},
        400,
        "invalid_session_timeout",
    ),
    "unknown join field": (
        "g/join",
        {"protocol_type": "c", "protocols": PROTOCOLS, "sesion_timeout_ms": 1},
        400,
        "invalid_request",
    ),
    "made-up member": (
        "g/join",
        {"member_id": "x", "protocol_type": "c", "protocols": PROTOCOLS},
        409,
        "unknown_member",
    ),
    "sync without generation": ("g/sync", {"member_id": "x"}, 400, "invalid_request"),
    "heartbeat of a stranger": (
        "g/heartbeat",
        {"member_id": "x", "generation": 1},
        409,
        "unknown_member",
    ),
    "generation is text": (
        "g/heartbeat",
        {"member_id": "x", "generation": "1"},
        400,
        "invalid_request",
    ),
    "commit to an unknown topic": (
        "g/offsets",
        {"offsets": [{"topic": "nope", "partition": 0, "offset": 1}]},
        404,
        "unknown_topic",
    ),
    "commit to an unknown partition": (
        "g/offsets",
        {"offsets": [{"topic": "t", "partition": 9, "offset": 1}]},
        404,
        "unknown_partition",
    ),
    "negative offset": (
        "g/offsets",
        {"offsets": [{"topic": "t", "partition": 0, "offset": -1}]},
        400,
        "invalid_request",
    ),
    "no offsets": ("g/offsets", {"offsets": []}, 400, "invalid_request"),
    "reset to nowhere": ("g/offsets/reset", {"to": "yesterday"}, 400, "invalid_request"),
    "reset to a time without one": (
        "g/offsets/reset",
        {"to": "timestamp", "topics": ["t"]},
        400,
        "invalid_request",
    ),
    "reset of an unknown topic": (
        "g/offsets/reset",
        {"to": "earliest", "topics": ["nope"]},
        404,
        "unknown_topic",
    ),
    "body not an object": ("g/leave", [], 400, "invalid_request"),
}


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("groups") / "data").start()
    try:
        assert call("POST", f"{proc.url}/v1/topics", {"name": "t", "partitions": 2}).status == 201
        yield proc
    finally:
        proc.kill()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_group_requests_get_a_clear_error(shared_broker: BrokerProcess, name: str) -> None:
    broker = shared_broker
    path, body, status, code = BAD[name]
    reply = post(broker, path, body)
    assert (reply.status, reply.error_code) == (status, code), reply.body
    assert committed(broker) == {}
    assert call("GET", f"{broker.url}/healthz").status == 200
