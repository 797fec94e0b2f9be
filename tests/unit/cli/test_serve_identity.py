"""``millstream serve``: the broker id (flag, environment, hostname ordinal) and token file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from millstream.cli import serve
from millstream.cli.main import build_parser, main
from millstream.cli.options import UsageError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MILLSTREAM_BROKER_ID", "MILLSTREAM_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize(
    ("hostname", "ordinal"),
    [("millstream-0", 0), ("millstream-broker-12", 12), ("ms-3.ms-headless.ns.svc", 3)],
)
def test_the_ordinal_is_the_trailing_number_of_the_hostname(hostname: str, ordinal: int) -> None:
    assert serve.ordinal_of(hostname) == ordinal


@pytest.mark.parametrize("hostname", ["laptop", "millstream-", "millstream-x", "ms-1a"])
def test_a_hostname_without_an_ordinal_is_a_usage_error(hostname: str) -> None:
    with pytest.raises(UsageError):
        serve.ordinal_of(hostname)


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    assert serve.identity_args(parse()) == (None, None)
    monkeypatch.setenv("MILLSTREAM_BROKER_ID", "4")
    monkeypatch.setenv("MILLSTREAM_ADMIN_TOKEN_FILE", str(token))
    assert serve.identity_args(parse()) == (4, token)
    assert serve.identity_args(parse("--broker-id", "7")) == (7, token)
    monkeypatch.setattr(serve.socket, "gethostname", lambda: "millstream-2")
    assert serve.identity_args(parse("--broker-id-from-hostname")) == (2, token)


def test_bad_identities_are_usage_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for argv in (
        ["--broker-id", "-1"],
        ["--broker-id", "x"],
        ["--broker-id", "1", "--broker-id-from-hostname"],
    ):
        with pytest.raises(SystemExit) as exited:
            parse(*argv)
        assert exited.value.code == 2
    assert main(["serve", "--admin-token-file", str(tmp_path / "missing")]) == 2
    monkeypatch.setenv("MILLSTREAM_BROKER_ID", "many")
    assert main(["serve"]) == 2
