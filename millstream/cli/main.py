"""The ``millstream`` command: parse the command line, run one command, map failures to exits.

Called by the ``millstream`` console script and by ``python -m millstream.cli.main``. Each
command module registers its own subcommand and sets ``run``; this module owns the exit codes:
0 on success, 1 for a failure (printed as ``millstream: error: <code>: <message>`` with the
stable code of :mod:`millstream.errors`), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from millstream import __version__, errors
from millstream.cli import consume, groups, kube_operator, produce, serve, topics
from millstream.cli.options import UsageError, url_options

PROG = "millstream"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Millstream: a Kafka-style event-streaming broker and its tools.",
        parents=[url_options()],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    topics.register(commands)
    produce.register(commands)
    consume.register(commands)
    groups.register(commands)
    kube_operator.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except errors.MillstreamError as exc:
        print(f"{PROG}: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`millstream consume ... | head`). Point stdout at /dev/null so
        # the interpreter's final flush does not fail again, and exit as if by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
