"""``millstream operator``: the chart's flags, and usage errors before anything starts."""

from __future__ import annotations

import pytest

from millstream.cli.main import build_parser, main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MILLSTREAM_OPERATOR_NAMESPACE", "MILLSTREAM_BROKER_URLS"):
        monkeypatch.delenv(name, raising=False)


def test_the_charts_flags() -> None:
    args = build_parser().parse_args(
        ["operator", "--namespace=streaming", "--liveness=http://0.0.0.0:8080/healthz"]
    )
    assert args.namespace == ["streaming"] and not args.all_namespaces
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    everywhere = build_parser().parse_args(["operator", "--all-namespaces", "--drift-interval=2"])
    assert everywhere.all_namespaces and everywhere.drift_interval == 2.0


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["operator", "--namespace=a", "--all-namespaces"])
    assert usage.value.code == 2


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_intervals_are_positive_seconds(value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--all-namespaces", f"--drift-interval={value}"])


def test_without_a_namespace_it_says_which_flags_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["operator"]) == 2
    assert "--namespace=NS" in capsys.readouterr().err


def test_a_bad_broker_url_override_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MILLSTREAM_BROKER_URLS", "localhost:9092")
    assert main(["operator", "--namespace=a"]) == 2
    assert "MILLSTREAM_BROKER_URLS" in capsys.readouterr().err
