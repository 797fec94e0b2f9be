"""Options shared by the commands: the broker URL, environment defaults, and value parsers.

Used by every command module of :mod:`millstream.cli`. The parsers here are argparse ``type=``
functions, so a bad value is a usage error (exit code 2) reported by argparse itself; a bad
value in an environment variable is a :class:`UsageError` raised when the command runs.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from millstream.client.models import DEFAULT_URL

T = TypeVar("T")

if TYPE_CHECKING:
    # What ``add_subparsers()`` returns; each command module's ``register`` takes it.
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

URL_ENV = "MILLSTREAM_URL"
_INTEGER = re.compile(r"-?\d+")


class UsageError(Exception):
    """The command line (or an environment variable standing in for it) is wrong: exit 2."""


def from_env(name: str, parse: Callable[[str], T], default: T) -> T:
    """The value of environment variable ``name`` parsed, or ``default`` if it is unset/empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"{name}={raw!r}: {exc}") from None


def url_options() -> argparse.ArgumentParser:
    """A parent parser with ``--url``, for the commands that talk to a broker."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        default=argparse.SUPPRESS,  # so that `millstream --url X topics list` is not overwritten
        help=f"broker URL, or several comma-separated (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    return parent


def broker_url(args: argparse.Namespace) -> str:
    url: str | None = getattr(args, "url", None)
    return url or from_env(URL_ENV, str, DEFAULT_URL)


def output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {port}")
    return port


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def config_item(text: str) -> tuple[str, int | str]:
    """``name=value``; integers become JSON numbers, anything else stays a string."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, int(value) if _INTEGER.fullmatch(value) else value


def timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch, given as such or as ISO 8601 (local time if no offset)."""
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected epoch milliseconds or an ISO 8601 time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without an offset is the local time
    return round(moment.timestamp() * 1000)
