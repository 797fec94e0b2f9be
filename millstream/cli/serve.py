"""``millstream serve``: run a single broker with a local data directory.

Called by :mod:`millstream.cli.main`; also how tests start real brokers
(``tests/support/broker.py``). It only turns flags and environment variables into
:class:`~millstream.broker.server.BrokerSettings`; the broker prints its own listening line and
handles SIGINT/SIGTERM. Flags win over ``MILLSTREAM_DATA_DIR``, ``MILLSTREAM_HOST`` and
``MILLSTREAM_PORT``, which win over the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from millstream.cli.options import config_item, from_env, port_number

if TYPE_CHECKING:
    from millstream.cli.options import Commands

DEFAULT_DATA_DIR = Path("./data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="run a broker",
        description="Run a single broker that keeps its partition logs in a local directory.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"where the logs live (default: $MILLSTREAM_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--host", help=f"address to listen on (default: $MILLSTREAM_HOST or {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        help=f"port to listen on, 0 for any free one (default: $MILLSTREAM_PORT or {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--housekeeping-interval",
        type=positive_seconds,
        metavar="SECONDS",
        help="how often retention and segment age are checked (default: the broker's, 30)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="grace for in-flight requests when stopping (default: the broker's, 10)",
    )
    parser.add_argument(
        "--topic-default",
        type=config_item,
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=VALUE",
        help="default settings for new topics, e.g. retention.ms=86400000 (repeatable)",
    )
    parser.set_defaults(run=run)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def settings_args(args: argparse.Namespace) -> tuple[Path, str, int]:
    """(data dir, host, port) from the flags, then the environment, then the defaults."""
    data_dir = args.data_dir or from_env("MILLSTREAM_DATA_DIR", Path, DEFAULT_DATA_DIR)
    host = args.host or from_env("MILLSTREAM_HOST", str, DEFAULT_HOST)
    port = (
        args.port
        if args.port is not None
        else from_env("MILLSTREAM_PORT", port_number, DEFAULT_PORT)
    )
    return data_dir, host, port


def run(args: argparse.Namespace) -> int:
    data_dir, host, port = settings_args(args)
    # Imported here so that client commands never load the broker.
    from millstream.broker.server import BrokerSettings
    from millstream.broker.server import run as run_broker
    from millstream.broker.storage.config import TopicConfig

    # Only what was given: the broker's own defaults stay the single source of them.
    optional: dict[str, Any] = {}
    if args.housekeeping_interval is not None:
        optional["housekeeping_interval_s"] = args.housekeeping_interval
    if args.shutdown_timeout is not None:
        optional["shutdown_timeout_s"] = args.shutdown_timeout
    if args.topic_default:
        optional["topic_defaults"] = TopicConfig().with_updates(dict(args.topic_default))
    run_broker(BrokerSettings(data_dir=data_dir, host=host, port=port, **optional))
    return 0
