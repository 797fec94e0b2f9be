"""Group administration: the requests Admin sends and how it reads the broker's answers."""

from __future__ import annotations

from typing import Any

import pytest

from millstream import errors
from millstream.client.admin import Admin
from millstream.client.models import (
    GroupDescription,
    GroupPartitionOffset,
    GroupSummary,
    MemberDescription,
    OffsetAndMetadata,
    TopicPartition,
)
from millstream.client.transport import Transport, group_path

DESCRIPTION = {
    "group": "billing",
    "state": "Stable",
    "protocol_type": "consumer",
    "protocol": "cooperative-sticky",
    "generation": 7,
    "leader": "billing-1",
    "members": [
        {
            "member_id": "billing-1",
            "client_id": "worker-1",
            "client_host": "127.0.0.1",
            "session_timeout_ms": 10000,
            "assignment": [{"topic": "orders", "partitions": [0, 1]}],
        },
        {
            "member_id": "other-2",
            "client_id": "",
            "client_host": "10.0.0.2",
            "session_timeout_ms": 5000,
            "assignment": None,
        },
    ],
    "offsets": [
        {
            "topic": "orders",
            "partition": 0,
            "committed": 120,
            "log_end_offset": 130,
            "lag": 10,
            "member_id": "billing-1",
        },
        {
            "topic": "orders",
            "partition": 1,
            "committed": None,
            "log_end_offset": 4,
            "lag": None,
            "member_id": None,
        },
    ],
    "lag": 10,
}


class ScriptedTransport(Transport):
    def __init__(self, answer: Any) -> None:
        super().__init__("http://broker.invalid")
        self.answer = answer
        self.calls: list[tuple[str, str, Any, Any]] = []

    async def call_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        self.calls.append((method, path, body, params))
        return self.answer


async def test_a_description_is_read_whole() -> None:
    transport = ScriptedTransport(DESCRIPTION)
    group = await Admin(transport).describe_group("billing")
    assert transport.calls == [("GET", "/v1/groups/billing", None, None)]
    assert group == GroupDescription(
        "billing",
        "Stable",
        "consumer",
        "cooperative-sticky",
        7,
        "billing-1",
        (
            MemberDescription(
                "billing-1",
                "worker-1",
                "127.0.0.1",
                10000,
                (TopicPartition("orders", 0), TopicPartition("orders", 1)),
            ),
            MemberDescription("other-2", "", "10.0.0.2", 5000, None),
        ),
        (
            GroupPartitionOffset("orders", 0, 120, 130, 10, "billing-1"),
            GroupPartitionOffset("orders", 1, None, 4, None, None),
        ),
        10,
    )


async def test_an_unexpected_description_is_an_error() -> None:
    with pytest.raises(errors.MillstreamError, match="unexpected group description"):
        await Admin(ScriptedTransport({"group": "x"})).describe_group("x")


async def test_the_group_list_counts_members() -> None:
    answer = {
        "groups": [
            {"group": "a", "state": "Empty", "protocol_type": None, "members": 0},
            {"group": "b", "state": "Stable", "protocol_type": "consumer", "members": 3},
        ]
    }
    groups = await Admin(ScriptedTransport(answer)).list_groups()
    assert groups == [
        GroupSummary("a", "Empty", None, 0),
        GroupSummary("b", "Stable", "consumer", 3),
    ]


async def test_commits_carry_the_member_and_metadata() -> None:
    transport = ScriptedTransport(None)
    admin = Admin(transport)
    await admin.commit_offsets(
        "g", {("t", 0): 5, TopicPartition("t", 1): OffsetAndMetadata(9, "n")}
    )
    await admin.commit_offsets("g", {("t", 0): 6}, member_id="m-1", generation=3)
    assert transport.calls == [
        (
            "POST",
            "/v1/groups/g/offsets",
            {
                "offsets": [
                    {"topic": "t", "partition": 0, "offset": 5, "metadata": ""},
                    {"topic": "t", "partition": 1, "offset": 9, "metadata": "n"},
                ]
            },
            None,
        ),
        (
            "POST",
            "/v1/groups/g/offsets",
            {
                "offsets": [{"topic": "t", "partition": 0, "offset": 6, "metadata": ""}],
                "member_id": "m-1",
                "generation": 3,
            },
            None,
        ),
    ]


async def test_committed_offsets_by_topic() -> None:
    answer = {"offsets": [{"topic": "t", "partition": 2, "offset": 40, "metadata": None}]}
    transport = ScriptedTransport(answer)
    found = await Admin(transport).committed_offsets("g", ["t", "u"])
    assert found == {TopicPartition("t", 2): OffsetAndMetadata(40, "")}
    assert transport.calls[0][3] == [("topic", "t"), ("topic", "u")]


async def test_reset_requests() -> None:
    answer = {"offsets": [{"topic": "t", "partition": 0, "offset": 3}]}
    transport = ScriptedTransport(answer)
    admin = Admin(transport)
    assert await admin.reset_offsets("g", "earliest") == {TopicPartition("t", 0): 3}
    await admin.reset_offsets("g", "timestamp", topics=["t"], timestamp=1_000, dry_run=True)
    await admin.reset_offsets("g", "offsets", offsets={("t", 0): 3})
    assert [call[2] for call in transport.calls] == [
        {"to": "earliest", "dry_run": False},
        {"to": "timestamp", "dry_run": True, "topics": ["t"], "timestamp": 1_000},
        {
            "to": "offsets",
            "dry_run": False,
            "offsets": [{"topic": "t", "partition": 0, "offset": 3}],
        },
    ]
    assert {call[1] for call in transport.calls} == {"/v1/groups/g/offsets/reset"}


def test_group_ids_are_escaped_in_paths() -> None:
    assert group_path("a/b c", "offsets") == "/v1/groups/a%2Fb%20c/offsets"
