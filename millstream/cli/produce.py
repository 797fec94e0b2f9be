"""``millstream produce TOPIC``: one record per line of standard input (or a file).

Called by :mod:`millstream.cli.main`. Lines are read in a thread, in whatever chunks the pipe
or file gives (``read1``), so an interactive line is sent as soon as it is typed while a large
file is read and sent in bulk; the event loop only splits lines and feeds
:meth:`~millstream.client.Producer.send_many`. A record's value is its line without the
newline; with ``--key-separator`` the part before the first separator is the key (a line
without one has no key). The summary and, on a terminal, the progress go to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, BinaryIO

from millstream import errors
from millstream.cli.options import UsageError, broker_url, non_negative_int, url_options
from millstream.client.models import ProducerRecord
from millstream.client.producer import Producer

if TYPE_CHECKING:
    from millstream.cli.options import Commands

_READ_CHUNK = 1 << 16
_PROGRESS_EVERY_S = 0.5
Lines = asyncio.Queue[list[bytes] | None]


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "produce",
        help="send lines of input as records",
        description="Send each line of standard input (or --file) to TOPIC as one record.",
        parents=[url_options()],
    )
    parser.add_argument("topic")
    parser.add_argument("--file", "-f", help="read this file instead of standard input")
    parser.add_argument(
        "--key-separator",
        "-K",
        metavar="SEP",
        help="split each line at the first SEP into key and value",
    )
    parser.add_argument(
        "--partition", "-p", type=non_negative_int, help="send to this partition only"
    )
    parser.add_argument(
        "--acks",
        choices=("all", "1", "0"),
        default="all",
        help="all: wait until durable (default); 1: until written; 0: do not wait",
    )
    parser.set_defaults(run=run)


def to_records(
    lines: list[bytes], separator: bytes | None, partition: int | None
) -> list[bytes] | list[ProducerRecord]:
    """The records for ``lines``: plain values when there is no key and no partition."""
    if separator is None and partition is None:
        return lines
    records = []
    for line in lines:
        key: bytes | None = None
        if separator is not None:
            head, found, tail = line.partition(separator)
            if found:
                key, line = head, tail
        records.append(ProducerRecord(line, key, (), partition))
    return records


def run(args: argparse.Namespace) -> int:
    if args.key_separator == "":
        raise UsageError("--key-separator must not be empty")
    try:
        source: BinaryIO = (
            sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")  # noqa: SIM115
        )
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    with source:
        count = asyncio.run(_produce(args, source))
    print(f"produced {count} record(s) to {args.topic}", file=sys.stderr)
    return 0


async def _produce(args: argparse.Namespace, source: BinaryIO) -> int:
    separator = args.key_separator.encode() if args.key_separator is not None else None
    progress = _Progress() if sys.stderr.isatty() else None
    async with Producer(broker_url(args), acks=args.acks) as producer:
        partitions = await producer.partitions_for(args.topic)  # unknown topic: fail early
        if args.partition is not None and args.partition >= partitions:
            raise errors.UnknownPartition(
                f"topic {args.topic!r} has partitions 0..{partitions - 1}, not {args.partition}"
            )
        queue: Lines = asyncio.Queue(maxsize=16)
        loop = asyncio.get_running_loop()
        threading.Thread(target=_read_lines, args=(source, loop, queue), daemon=True).start()
        count = 0
        while (lines := await queue.get()) is not None:
            await producer.send_many(args.topic, to_records(lines, separator, args.partition))
            count += len(lines)
            if progress is not None:
                progress.show(count)
        if progress is not None:
            progress.clear()
    return count


def _read_lines(source: BinaryIO, loop: asyncio.AbstractEventLoop, queue: Lines) -> None:
    """Runs in a thread: hand complete lines to the loop, chunk by chunk, then None."""

    def put(item: list[bytes] | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    read = getattr(source, "read1", source.read)
    tail = b""
    try:
        while chunk := read(_READ_CHUNK):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            if lines:
                put(lines)
        if tail:
            put([tail])
        put(None)
    except RuntimeError:
        pass  # the loop is gone: the command failed and is exiting


class _Progress:
    """``12,345 records sent`` on one terminal line, rewritten at most twice a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def show(self, count: int) -> None:
        now = time.monotonic()
        if now - self._last >= _PROGRESS_EVERY_S:
            self._last = now
            sys.stderr.write(f"\r{count:,} records sent")
            sys.stderr.flush()

    def clear(self) -> None:
        if self._last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
