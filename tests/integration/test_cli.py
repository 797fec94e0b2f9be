"""The `millstream` command against real broker processes, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.broker import BrokerProcess


def cli(
    broker: BrokerProcess, *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
    env["MILLSTREAM_URL"] = broker.url
    return subprocess.run(
        [sys.executable, "-m", "millstream.cli.main", *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_topics_create_list_describe_alter_delete(broker: BrokerProcess) -> None:
    created = ok(cli(broker, "topics", "create", "orders", "--partitions", "3",
                     "--config", "retention.ms=3600000", "flush.ms=0"))  # fmt: skip
    assert created == 'topic "orders" created (3 partitions)\n'
    ok(cli(broker, "topics", "create", "audit"))

    listing = ok(cli(broker, "topics", "list")).splitlines()
    assert listing[0].split() == ["NAME", "PARTITIONS"]
    assert sorted(line.split() for line in listing[1:]) == [["audit", "1"], ["orders", "3"]]
    as_json = json.loads(ok(cli(broker, "topics", "list", "-o", "json")))
    assert sorted((t["name"], t["partitions"]) for t in as_json["topics"]) == [
        ("audit", 1),
        ("orders", 3),
    ]

    described = ok(cli(broker, "topics", "describe", "orders"))
    assert "Name:        orders" in described
    assert "  retention.ms:" in described and "3600000" in described
    table = described[described.index("PARTITION") :].splitlines()
    assert [row.split()[:3] for row in table[1:]] == [
        ["0", "0", "0"],
        ["1", "0", "0"],
        ["2", "0", "0"],
    ]

    altered = ok(cli(broker, "topics", "alter", "orders", "--partitions", "5",
                     "--config", "retention.ms=60000", "-o", "json"))  # fmt: skip
    document = json.loads(altered)
    assert len(document["partitions"]) == 5
    assert document["config"]["retention.ms"] == 60000

    assert ok(cli(broker, "topics", "delete", "audit")) == 'topic "audit" deleted\n'
    assert [
        t["name"] for t in json.loads(ok(cli(broker, "topics", "list", "-o", "json")))["topics"]
    ] == ["orders"]


def test_topic_errors_have_codes_and_exit_1(broker: BrokerProcess) -> None:
    ok(cli(broker, "topics", "create", "dup"))
    exists = cli(broker, "topics", "create", "dup")
    assert exists.returncode == 1
    assert exists.stderr.decode().startswith("millstream: error: topic_exists: ")
    bad = cli(broker, "topics", "alter", "dup", "--config", "no.such=1")
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("millstream: error: invalid_config: ")
    usage = cli(broker, "topics", "create", "x", "--partitions", "zero")
    assert usage.returncode == 2


def test_produce_with_keys_then_consume_from_the_beginning(broker: BrokerProcess) -> None:
    ok(cli(broker, "topics", "create", "people", "--partitions", "2"))
    lines = b"alice:likes tea\nbob:likes coffee\nno separator here\nalice:and cake\n"
    produced = cli(broker, "produce", "people", "--key-separator", ":", input=lines)
    ok(produced)
    assert produced.stderr.decode().strip() == "produced 4 record(s) to people"

    values = ok(cli(broker, "consume", "people", "--from-beginning")).splitlines()
    assert sorted(values) == ["and cake", "likes coffee", "likes tea", "no separator here"]

    records = [
        json.loads(line)
        for line in ok(cli(broker, "consume", "people", "--format", "json")).splitlines()
    ]
    assert {r["topic"] for r in records} == {"people"}
    by_key: dict[str | None, list[str]] = {}
    for r in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        by_key.setdefault(r["key"], []).append(r["value"])
        assert set(r) >= {"partition", "offset", "timestamp", "key", "value"}
    assert by_key == {
        "alice": ["likes tea", "and cake"],
        "bob": ["likes coffee"],
        None: ["no separator here"],
    }
    alice = [r for r in records if r["key"] == "alice"]
    assert len({r["partition"] for r in alice}) == 1


def test_produce_from_a_file_to_one_partition_and_consume_it(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    ok(cli(broker, "topics", "create", "logs", "--partitions", "3"))
    source = tmp_path / "lines.txt"
    source.write_bytes(b"".join(b"line %d\n" % i for i in range(5_000)) + b"last, no newline")
    ok(cli(broker, "produce", "logs", "--file", str(source), "--partition", "2", "--acks", "1"))
    out = ok(cli(broker, "consume", "logs", "--partition", "2")).splitlines()
    assert out == [f"line {i}" for i in range(5_000)] + ["last, no newline"]
    assert ok(cli(broker, "consume", "logs", "--partition", "0")) == ""
    tail = ok(cli(broker, "consume", "logs", "--offset", "-2", "--format", "json")).splitlines()
    assert [json.loads(line)["offset"] for line in tail] == [4_999, 5_000]
    some = ok(cli(broker, "consume", "logs", "-p", "2", "--offset", "10", "--max-records", "3"))
    assert some.splitlines() == ["line 10", "line 11", "line 12"]
    missing = cli(broker, "produce", "logs", "--file", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr.decode()


def test_consume_follow_waits_for_new_records(broker: BrokerProcess) -> None:
    ok(cli(broker, "topics", "create", "live"))
    ok(cli(broker, "produce", "live", input=b"old\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
    follower = subprocess.Popen(
        [sys.executable, "-m", "millstream.cli.main", "consume", "live", "--follow",
         "--max-records", "3", "--url", broker.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # let it start at the end of the log
        ok(cli(broker, "produce", "live", input=b"one\ntwo\n"))
        time.sleep(0.3)
        ok(cli(broker, "produce", "live", input=b"three\nfour\n"))
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["one", "two", "three"]


def test_consume_from_a_timestamp(broker: BrokerProcess) -> None:
    ok(cli(broker, "topics", "create", "timed"))
    ok(cli(broker, "produce", "timed", input=b"before\n"))
    time.sleep(0.05)
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    ok(cli(broker, "produce", "timed", input=b"after\n"))
    assert ok(cli(broker, "consume", "timed", "--from-timestamp", str(middle))) == "after\n"


def test_unknown_topic_is_an_error_with_its_code(broker: BrokerProcess) -> None:
    for args in (["consume", "nope"], ["produce", "nope"], ["topics", "describe", "nope"]):
        result = cli(broker, *args, input=b"x\n")
        assert result.returncode == 1
        assert result.stderr.decode().startswith("millstream: error: unknown_topic: "), args
        assert result.stdout == b""


def test_an_unreachable_broker_is_reported(tmp_path: Path) -> None:
    down = BrokerProcess(tmp_path)
    down.url = "http://127.0.0.1:9"  # discard: nothing listens there
    result = cli(down, "topics", "list")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("millstream: error: broker_unavailable: ")


# --- consumer groups ---------------------------------------------------------------------------


def test_consume_in_a_group_commits_and_groups_show_reset_and_delete_it(
    broker: BrokerProcess,
) -> None:
    ok(cli(broker, "topics", "create", "tasks", "--partitions", "2"))
    for partition in ("0", "1"):
        lines = b"".join(b"p%s-%d\n" % (partition.encode(), i) for i in range(5))
        ok(cli(broker, "produce", "tasks", "--partition", partition, input=lines))

    first = ok(cli(broker, "consume", "tasks", "--group", "crew")).splitlines()
    assert sorted(first) == sorted(f"p{p}-{i}" for p in range(2) for i in range(5))
    assert ok(cli(broker, "consume", "tasks", "--group", "crew")) == ""  # all committed

    listing = ok(cli(broker, "groups", "list")).splitlines()
    assert listing[0].split() == ["NAME", "STATE", "MEMBERS", "PROTOCOL-TYPE"]
    assert listing[1].split() == ["crew", "Empty", "0", "-"]
    as_json = json.loads(ok(cli(broker, "groups", "list", "-o", "json")))
    assert as_json == {
        "groups": [{"group": "crew", "state": "Empty", "protocol_type": None, "members": 0}]
    }
    described = ok(cli(broker, "groups", "describe", "crew"))
    assert "State:          Empty" in described and "Lag:            0" in described
    rows = described[described.index("TOPIC") :].splitlines()[1:]
    assert [row.split() for row in rows] == [
        ["tasks", "0", "5", "5", "0", "-"],
        ["tasks", "1", "5", "5", "0", "-"],
    ]

    plan = cli(broker, "groups", "reset-offsets", "crew", "--to-earliest")
    assert [row.split() for row in ok(plan).splitlines()] == [
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
        ["crew", "tasks", "0", "0"],
        ["crew", "tasks", "1", "0"],
    ]
    assert "--execute" in plan.stderr.decode()
    offsets = json.loads(ok(cli(broker, "groups", "describe", "crew", "-o", "json")))["offsets"]
    assert [o["committed"] for o in offsets] == [5, 5]  # a dry run changes nothing

    reset = cli(broker, "groups", "reset-offsets", "crew", "--to-offset", "3",
                "--topic", "tasks:1", "--execute", "-o", "json")  # fmt: skip
    assert json.loads(ok(reset)) == {
        "group": "crew",
        "dry_run": False,
        "offsets": [{"topic": "tasks", "partition": 1, "offset": 3}],
    }
    assert reset.stderr == b""
    assert sorted(ok(cli(broker, "consume", "tasks", "--group", "crew")).split()) == [
        "p1-3",
        "p1-4",
    ]
    ok(cli(broker, "groups", "reset-offsets", "crew", "--to-datetime", "2000-01-01T00:00:00Z",
           "--topic", "tasks", "--execute"))  # fmt: skip
    again = ok(cli(broker, "consume", "tasks", "--group", "crew", "--max-records", "4"))
    assert len(again.splitlines()) == 4
    offsets = json.loads(ok(cli(broker, "groups", "describe", "crew", "-o", "json")))["offsets"]
    assert sum(o["committed"] for o in offsets) == 4  # exactly what was printed

    assert ok(cli(broker, "groups", "delete", "crew")) == 'group "crew" deleted\n'
    gone = cli(broker, "groups", "describe", "crew")
    assert gone.returncode == 1
    assert gone.stderr.decode().startswith("millstream: error: unknown_group: ")


def test_consume_in_a_group_follows_and_a_live_group_cannot_be_reset(
    broker: BrokerProcess,
) -> None:
    ok(cli(broker, "topics", "create", "feed"))
    ok(cli(broker, "produce", "feed", input=b"before\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
    follower = subprocess.Popen(
        [sys.executable, "-m", "millstream.cli.main", "consume", "feed", "--group", "tail",
         "--follow", "--max-records", "2", "--url", broker.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # joined: the group is Stable
            listing = json.loads(ok(cli(broker, "groups", "list", "-o", "json")))["groups"]
            if listing and listing[0]["state"] == "Stable":
                break
            time.sleep(0.1)
        live = cli(broker, "groups", "reset-offsets", "tail", "--to-earliest", "--execute")
        assert live.returncode == 1
        assert live.stderr.decode().startswith("millstream: error: group_not_empty: ")
        ok(cli(broker, "produce", "feed", input=b"one\ntwo\nthree\n"))
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["one", "two"]  # following starts at the end
    offsets = json.loads(ok(cli(broker, "groups", "describe", "tail", "-o", "json")))["offsets"]
    assert [(o["committed"], o["lag"]) for o in offsets] == [(3, 1)]
