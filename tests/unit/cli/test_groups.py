"""``millstream groups`` and ``consume --group`` without a broker: parsing and rendering."""

from __future__ import annotations

import argparse

import pytest

from millstream.cli.groups import (
    description_json,
    render_assignment,
    render_description,
    reset_target,
    topic_spec,
)
from millstream.cli.main import build_parser, main
from millstream.client.models import (
    GroupDescription,
    GroupPartitionOffset,
    MemberDescription,
    TopicPartition,
)

GROUP = GroupDescription(
    "billing",
    "Stable",
    "consumer",
    "range",
    7,
    "m-1",
    (
        MemberDescription(
            "m-1",
            "worker",
            "127.0.0.1",
            10_000,
            (TopicPartition("orders", 1), TopicPartition("audit", 0), TopicPartition("orders", 0)),
        ),
        MemberDescription("m-2", "", "127.0.0.2", 10_000, ()),
    ),
    (
        GroupPartitionOffset("orders", 0, 120, 130, 10, "m-1"),
        GroupPartitionOffset("orders", 1, None, 4, None, "m-1"),
    ),
    10,
)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_topic_specs() -> None:
    assert topic_spec("orders") == ("orders", ())
    assert topic_spec("orders:2,0,2") == ("orders", (0, 2))
    assert topic_spec("a:b:1") == ("a:b", (1,))
    for bad in ("orders:x", "orders:-1", ":1", "orders:"):
        with pytest.raises(argparse.ArgumentTypeError):
            topic_spec(bad)


def test_a_description_like_kubectl_describe() -> None:
    lines = render_description(GROUP).splitlines()
    assert lines[:8] == [
        "Group:          billing",
        "State:          Stable",
        "Protocol type:  consumer",
        "Protocol:       range",
        "Generation:     7",
        "Leader:         m-1",
        "Members:        2",
        "Lag:            10",
    ]
    assert lines[9].split() == ["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"]
    assert lines[10].split() == ["m-1", "worker", "127.0.0.1", "audit:0", "orders:0,1"]
    assert lines[11].split() == ["m-2", "-", "127.0.0.2", "-"]
    assert lines[13].split() == ["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER"]
    assert lines[14].split() == ["orders", "0", "120", "130", "10", "m-1"]
    assert lines[15].split() == ["orders", "1", "-", "4", "-", "m-1"]


def test_an_empty_group_is_described_without_tables() -> None:
    empty = GroupDescription("idle", "Empty", None, None, 3, None, (), (), None)
    assert render_description(empty).splitlines()[-1] == "Lag:            -"
    assert render_assignment(MemberDescription("m", "", "", 0, None)) == "-"


def test_json_keeps_the_broker_shape() -> None:
    document = description_json(GROUP)
    assert document["members"][0]["assignment"] == [
        {"topic": "audit", "partitions": [0]},
        {"topic": "orders", "partitions": [0, 1]},
    ]
    assert document["offsets"][1]["committed"] is None
    assert document["lag"] == 10


def test_reset_targets() -> None:
    base = ["groups", "reset-offsets", "g"]
    assert reset_target(parse(*base, "--to-earliest")) == ("earliest", "earliest")
    assert reset_target(parse(*base, "--to-latest", "--execute")) == ("latest", "latest")
    assert reset_target(parse(*base, "--to-offset", "5")) == ("offsets", 5)
    assert reset_target(parse(*base, "--to-timestamp", "1700000000000")) == (
        "timestamp",
        1_700_000_000_000,
    )
    assert reset_target(parse(*base, "--to-datetime", "2023-11-14T22:13:20Z")) == (
        "timestamp",
        1_700_000_000_000,
    )
    args = parse(*base, "--to-earliest", "--topic", "a", "--topic", "b:1,2")
    assert args.topic == [("a", ()), ("b", (1, 2))]
    assert not args.execute


@pytest.mark.parametrize(
    "argv",
    [
        ["groups", "reset-offsets", "g"],  # where to?
        ["groups", "reset-offsets", "g", "--to-earliest", "--to-latest"],
        ["groups", "reset-offsets", "g", "--to-earliest", "--dry-run", "--execute"],
        ["groups", "reset-offsets", "g", "--to-offset", "-1"],
        ["groups", "describe"],
    ],
)
def test_bad_group_commands_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2


@pytest.mark.parametrize(
    "extra", [["--partition", "1"], ["--offset", "3"], ["--from-timestamp", "5"]]
)
def test_consume_in_a_group_does_not_choose_partitions_or_offsets(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", "http://127.0.0.1:9", "consume", "t", "--group", "g", *extra]) == 2
    assert "--group" in capsys.readouterr().err
