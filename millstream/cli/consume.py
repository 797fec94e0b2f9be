"""``millstream consume TOPIC``: print records, one per line, in the spirit of kcat.

Called by :mod:`millstream.cli.main`. Reads every partition of the topic (or one) through the
:class:`~millstream.client.Consumer`. Without ``--follow`` it notes each partition's end offset
when it starts and exits once it has read up to all of them; with ``--follow`` it keeps waiting
for new records until interrupted or ``--max-records`` is reached. Where it starts: the
beginning when not following and the end when following, unless ``--from-beginning``,
``--offset`` or ``--from-timestamp`` say otherwise.

With ``--group`` it subscribes as a member of that consumer group instead: it reads the
partitions the group gives it, from the group's committed offsets (where there are none, from
the beginning, or the end when following), commits its position as it goes and when it exits,
and without ``--follow`` exits once its partitions are read up to the ends noted at the start.
Records past those ends are not printed, and the position goes back to the end so they are not
committed either.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from millstream import errors
from millstream.cli.options import (
    UsageError,
    broker_url,
    non_negative_int,
    timestamp_ms,
    url_options,
)
from millstream.client.admin import Admin
from millstream.client.consumer import Consumer
from millstream.client.models import ConsumerRecord, TopicPartition
from millstream.client.transport import Transport

if TYPE_CHECKING:
    from millstream.cli.options import Commands

_POLL_MS = 500


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "consume",
        help="print records",
        description="Print the records of TOPIC, one per line.",
        parents=[url_options()],
    )
    parser.add_argument("topic")
    parser.add_argument(
        "--partition", "-p", type=non_negative_int, help="read this partition only (default: all)"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument(
        "--offset",
        type=int,
        help="start at this offset in each partition; negative: this many before the end",
    )
    start.add_argument(
        "--from-timestamp",
        type=timestamp_ms,
        metavar="MS|ISO8601",
        help="start at the first record at or after this time",
    )
    parser.add_argument(
        "--group",
        "-g",
        metavar="GROUP",
        help="read as a member of this consumer group, from its committed offsets, committing",
    )
    parser.add_argument("--follow", "-F", action="store_true", help="keep waiting for new records")
    parser.add_argument(
        "--max-records", "-n", type=non_negative_int, help="exit after this many records"
    )
    parser.add_argument(
        "--format",
        choices=("value", "json"),
        default="value",
        help="value: the value alone (default); json: an object per record",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.group is not None and (
        args.partition is not None or args.offset is not None or args.from_timestamp is not None
    ):
        raise UsageError(
            "--group reads what the group assigns, from its committed offsets: "
            "--partition, --offset and --from-timestamp do not go with it"
        )
    asyncio.run(
        _consume_in_group(args, sys.stdout.buffer)
        if args.group
        else _consume(args, sys.stdout.buffer)
    )
    return 0


async def _consume(args: argparse.Namespace, out: BinaryIO) -> None:
    if args.max_records == 0:
        return
    async with Transport(broker_url(args)) as transport:
        topic = await Admin(transport).topic_metadata(args.topic)
        if args.partition is not None and args.partition >= topic.partition_count:
            raise errors.UnknownPartition(
                f"topic {topic.name!r} has partitions 0..{topic.partition_count - 1}, "
                f"not {args.partition}"
            )
        partitions = (
            [args.partition] if args.partition is not None else range(topic.partition_count)
        )
        tps = [TopicPartition(topic.name, p) for p in partitions]
        # "none": an explicit offset outside the log is an error, not a silent jump.
        consumer = Consumer(transport, auto_offset_reset="none", stream=args.follow)
        consumer.assign(tps)
        await _seek(consumer, args, tps)
        ends = None if args.follow else await consumer.end_offsets(tps)
        await _print_records(consumer, args, out, ends)
        await consumer.close()


async def _consume_in_group(args: argparse.Namespace, out: BinaryIO) -> None:
    if args.max_records == 0:
        return
    async with Transport(broker_url(args)) as transport:
        topic = await Admin(transport).topic_metadata(args.topic)
        tps = [TopicPartition(topic.name, p) for p in range(topic.partition_count)]
        reset: Literal["earliest", "latest"] = (
            "latest" if args.follow and not args.from_beginning else "earliest"
        )
        async with Consumer(
            transport, group_id=args.group, auto_offset_reset=reset, stream=args.follow
        ) as consumer:
            consumer.subscribe([topic.name])
            ends = None if args.follow else await consumer.end_offsets(tps)
            await _print_records(consumer, args, out, ends)


async def _seek(consumer: Consumer, args: argparse.Namespace, tps: list[TopicPartition]) -> None:
    if args.offset is not None and args.offset >= 0:
        for tp in tps:
            consumer.seek(tp, args.offset)
    elif args.offset is not None:  # from the end, but not before the beginning
        first, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(first[tp], end[tp] + args.offset))
    elif args.from_timestamp is not None:
        consumer.seek_to_timestamp(args.from_timestamp)
    elif args.from_beginning or not args.follow:
        consumer.seek_to_beginning()
    else:
        consumer.seek_to_end()


async def _print_records(
    consumer: Consumer,
    args: argparse.Namespace,
    out: BinaryIO,
    ends: dict[TopicPartition, int] | None,
) -> None:
    remaining = args.max_records
    render = render_json if args.format == "json" else render_value
    while True:
        if ends is not None and await _read_to_the_ends(consumer, ends):
            return
        records = await consumer.poll(timeout_ms=_POLL_MS, max_records=remaining)
        if ends is not None:  # records past the snapshot of the end are for another day
            records = _before_the_ends(consumer, records, ends)
        if records:
            out.write(b"".join(render(r) for r in records))
            out.flush()
        if remaining is not None:
            remaining -= len(records)
            if remaining <= 0:
                return


async def _read_to_the_ends(consumer: Consumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether every partition the consumer reads is read up to its end. In a group, only
    once it has joined: before that it has no partitions."""
    group = consumer.group_metadata()
    if group is not None and group.generation < 0:
        return False
    for tp in consumer.assignment():
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


def _before_the_ends(
    consumer: Consumer, records: list[ConsumerRecord], ends: dict[TopicPartition, int]
) -> list[ConsumerRecord]:
    kept, past = [], set()
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if record.offset < ends[tp]:
            kept.append(record)
        elif tp not in past:
            past.add(tp)
            consumer.seek(tp, ends[tp])  # so what was not printed is not committed either
    return kept


def render_value(record: ConsumerRecord) -> bytes:
    return (record.value or b"") + b"\n"


def render_json(record: ConsumerRecord) -> bytes:
    """One JSON line; keys, values and headers as the broker's JSON API shows them."""
    document: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    _put_bytes(document, "key", record.key)
    _put_bytes(document, "value", record.value)
    document["headers"] = list(_headers(record.headers))
    return json.dumps(document, ensure_ascii=False).encode() + b"\n"


def _headers(headers: Iterable[tuple[str, bytes | None]]) -> Iterable[dict[str, Any]]:
    for key, value in headers:
        header: dict[str, Any] = {"key": key}
        _put_bytes(header, "value", value)
        yield header


def _put_bytes(document: dict[str, Any], name: str, data: bytes | None) -> None:
    if data is None:
        document[name] = None
        return
    try:
        document[name] = data.decode()
    except UnicodeDecodeError:
        document[name] = None
        document[name + "_base64"] = base64.b64encode(data).decode()
