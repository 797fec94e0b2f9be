"""``millstream serve``: run a single broker with a local data directory.

Called by :mod:`millstream.cli.main`; also how tests start real brokers
(``tests/support/broker.py``). It only turns flags and environment variables into
:class:`~millstream.broker.server.BrokerSettings`; the broker prints its own listening line and
handles SIGINT/SIGTERM. Flags win over ``MILLSTREAM_DATA_DIR``, ``MILLSTREAM_HOST``,
``MILLSTREAM_PORT``, ``MILLSTREAM_BROKER_ID`` and ``MILLSTREAM_ADMIN_TOKEN_FILE``, which win
over the defaults.

A broker of a cluster needs an id (``--broker-id``, or ``--broker-id-from-hostname`` for the
ordinal a StatefulSet puts at the end of a pod's name: ``millstream-2`` is broker 2) and the
operator's admin token (``--admin-token-file``, a mounted Secret).
"""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from millstream.cli.options import (
    UsageError,
    config_item,
    from_env,
    port_number,
    positive_seconds,
)

if TYPE_CHECKING:
    from millstream.cli.options import Commands

DEFAULT_DATA_DIR = Path("./data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
MAX_BROKER_ID = 2**31 - 1
_ORDINAL = re.compile(r"-([0-9]+)$")


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
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument(
        "--broker-id",
        type=broker_id,
        help="this broker's id in a cluster (default: $MILLSTREAM_BROKER_ID; none: standalone)",
    )
    identity.add_argument(
        "--broker-id-from-hostname",
        action="store_true",
        help="take the id from the hostname's trailing -N, as a StatefulSet names its pods",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="PATH",
        help="the token the admin routes require (default: $MILLSTREAM_ADMIN_TOKEN_FILE; "
        "none: admin routes are closed)",
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


def broker_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a broker id: {text!r}") from None
    if not 0 <= value <= MAX_BROKER_ID:
        raise argparse.ArgumentTypeError(f"broker id must be from 0 to {MAX_BROKER_ID}")
    return value


def ordinal_of(hostname: str) -> int:
    """The trailing ``-N`` of a StatefulSet pod's hostname (``millstream-2`` → 2)."""
    match = _ORDINAL.search(hostname.split(".")[0])
    if match is None:
        raise UsageError(f"hostname {hostname!r} does not end in -N: give --broker-id instead")
    return broker_id(match.group(1))


def identity_args(args: argparse.Namespace) -> tuple[int | None, Path | None]:
    """(broker id, admin token file) from the flags, then the environment."""
    if args.broker_id_from_hostname:
        identity: int | None = ordinal_of(socket.gethostname())
    elif args.broker_id is not None:
        identity = args.broker_id
    else:
        identity = from_env("MILLSTREAM_BROKER_ID", broker_id, None)
    token_file = args.admin_token_file or from_env("MILLSTREAM_ADMIN_TOKEN_FILE", Path, None)
    if token_file is not None and not token_file.is_file():
        raise UsageError(f"admin token file {str(token_file)!r} does not exist")
    return identity, token_file


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
    identity, token_file = identity_args(args)
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
    settings = BrokerSettings(
        data_dir=data_dir,
        host=host,
        port=port,
        broker_id=identity,
        admin_token_file=token_file,
        **optional,
    )
    run_broker(settings)
    return 0
