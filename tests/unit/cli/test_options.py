"""Command-line parsing: flags, environment defaults, value parsers and usage-error exits."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import pytest

from millstream.cli import serve
from millstream.cli.main import build_parser, main
from millstream.cli.options import (
    UsageError,
    broker_url,
    config_item,
    timestamp_ms,
)
from millstream.client.models import DEFAULT_URL


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MILLSTREAM_URL", "MILLSTREAM_DATA_DIR", "MILLSTREAM_HOST", "MILLSTREAM_PORT"):
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("retention.ms=1000", ("retention.ms", 1000)),
        ("retention.ms=-1", ("retention.ms", -1)),
        (" flush.ms = 5 ", ("flush.ms", 5)),
        ("cleanup.policy=delete", ("cleanup.policy", "delete")),
        ("x=a=b", ("x", "a=b")),
        ("x=", ("x", "")),
    ],
)
def test_config_items(text: str, expected: tuple[str, int | str]) -> None:
    assert config_item(text) == expected


@pytest.mark.parametrize("text", ["retention.ms", "=5", ""])
def test_bad_config_items(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        config_item(text)


def test_timestamps_in_milliseconds_or_iso8601() -> None:
    assert timestamp_ms("1700000000000") == 1_700_000_000_000
    assert timestamp_ms("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert timestamp_ms("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert timestamp_ms("2023-11-14T22:13:20.5Z") == 1_700_000_000_500
    local = datetime(2023, 11, 14, 22, 13, 20).astimezone()
    assert timestamp_ms("2023-11-14T22:13:20") == round(local.timestamp() * 1000)
    with pytest.raises(argparse.ArgumentTypeError):
        timestamp_ms("yesterday")


def test_topics_create_takes_partitions_and_repeated_configs() -> None:
    args = parse(
        "topics", "create", "orders", "--partitions", "3",
        "--config", "retention.ms=1000", "flush.ms=0", "--config", "segment.bytes=4096",
    )  # fmt: skip
    assert (args.name, args.partitions) == ("orders", 3)
    assert dict(args.config) == {"retention.ms": 1000, "flush.ms": 0, "segment.bytes": 4096}
    assert args.output == "table"


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create", "orders", "--partitions", "0"],
        ["topics", "create", "orders", "--config", "novalue"],
        ["topics", "frobnicate"],
        ["consume", "t", "--from-beginning", "--offset", "3"],
        ["consume", "t", "--format", "xml"],
        ["serve", "--port", "70000"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_url_flag_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert broker_url(parse("topics", "list")) == DEFAULT_URL
    monkeypatch.setenv("MILLSTREAM_URL", "http://env:1")
    assert broker_url(parse("topics", "list")) == "http://env:1"
    assert broker_url(parse("topics", "list", "--url", "http://flag:2")) == "http://flag:2"
    assert broker_url(parse("--url", "http://top:3", "topics", "list")) == "http://top:3"
    assert broker_url(parse("consume", "t", "--url", "http://flag:4")) == "http://flag:4"


def test_consume_negative_offsets_are_offsets_not_flags() -> None:
    args = parse("consume", "t", "--offset", "-5", "-n", "10", "-F")
    assert (args.offset, args.max_records, args.follow) == (-5, 10, True)


def test_serve_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve.settings_args(parse("serve")) == (Path("./data"), "127.0.0.1", 9092)
    monkeypatch.setenv("MILLSTREAM_DATA_DIR", "/srv/ms")
    monkeypatch.setenv("MILLSTREAM_HOST", "0.0.0.0")
    monkeypatch.setenv("MILLSTREAM_PORT", "9999")
    assert serve.settings_args(parse("serve")) == (Path("/srv/ms"), "0.0.0.0", 9999)
    flags = parse("serve", "--data-dir", "d", "--host", "::1", "--port", "0")
    assert serve.settings_args(flags) == (Path("d"), "::1", 0)


def test_a_bad_port_in_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MILLSTREAM_PORT", "http")
    with pytest.raises(UsageError):
        serve.settings_args(parse("serve"))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("millstream: error: MILLSTREAM_PORT='http'")


def test_serve_passes_broker_tuning_flags() -> None:
    args = parse(
        "serve", "--housekeeping-interval", "0.2", "--shutdown-timeout", "3",
        "--topic-default", "retention.ms=60000",
    )  # fmt: skip
    assert (args.housekeeping_interval, args.shutdown_timeout) == (0.2, 3.0)
    assert args.topic_default == [("retention.ms", 60000)]
    with pytest.raises(SystemExit):
        parse("serve", "--housekeeping-interval", "0")
