"""A member of a consumer group that prints every record it is given as a JSON line.

Run one or several, and they share the topics' partitions; stop one (Ctrl-C, SIGTERM) and the
others take its partitions over, from where it committed::

    python examples/group_consumer.py --group billing --topic orders

Standard output gets one JSON object per record, flushed at once, with the generation of the
assignment and the member id it was read under::

    {"generation": 3, "member": "worker-1-…", "topic": "orders", "partition": 0,
     "offset": 41, "key": "alice", "value": "espresso"}

(keys and values that are not UTF-8 come as ``key_base64``/``value_base64``). Standard error
gets a JSON line per rebalance (``{"event": "assigned"|"revoked", "partitions": [[topic, p]…],
"generation", "member"}``) and the client's log. Positions are committed automatically
(``--auto-commit-interval-ms``), before partitions are given up, and on a graceful exit; a
``kill -9`` leaves the records read since the last commit to be read again by the next owner.
With ``--group-instance-id`` the member is static: restarted with the same id within its session
timeout, it takes its old place and partitions without a rebalance (on Kubernetes, pass the
pod's name). Integration tests run this program; it uses only the public client API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
import sys
from typing import Any

from millstream.client import DEFAULT_URL, Consumer, ConsumerRecord, TopicPartition


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", action="append", required=True, help="repeatable")
    parser.add_argument("--client-id", default=None)
    parser.add_argument(
        "--group-instance-id",
        default=None,
        help="static membership: a restart with the same id takes this member's place "
        "(no rebalance); give each process its own, e.g. its pod's name",
    )
    parser.add_argument(
        "--assignor", action="append", help="repeatable, preferred first (default: the client's)"
    )
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    parser.add_argument("--auto-commit-interval-ms", type=int, default=1_000)
    parser.add_argument("--auto-offset-reset", choices=("earliest", "latest"), default="earliest")
    parser.add_argument("--max-records", type=int, help="exit (gracefully) after this many")
    return parser.parse_args(argv)


async def consume(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    if args.assignor:
        options["assignors"] = tuple(args.assignor)
    consumer = Consumer(
        args.url,
        group_id=args.group,
        client_id=args.client_id,
        auto_offset_reset=args.auto_offset_reset,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        auto_commit_interval_ms=args.auto_commit_interval_ms,
        group_instance_id=args.group_instance_id,
        **options,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def event(name: str) -> Any:
        def callback(partitions: set[TopicPartition]) -> None:
            group = consumer.group_metadata()
            assert group is not None
            line = {
                "event": name,
                "partitions": sorted([tp.topic, tp.partition] for tp in partitions),
                "generation": group.generation,
                "member": group.member_id,
            }
            print(json.dumps(line), file=sys.stderr, flush=True)

        return callback

    async with consumer:
        consumer.subscribe(args.topic, on_assign=event("assigned"), on_revoke=event("revoked"))
        printed = 0
        while not stop.is_set() and (args.max_records is None or printed < args.max_records):
            limit = None if args.max_records is None else args.max_records - printed
            records = await consumer.poll(timeout_ms=200, max_records=limit)
            group = consumer.group_metadata()
            assert group is not None
            lines = [record_line(r, group.generation, group.member_id) for r in records]
            if lines:
                sys.stdout.write("".join(lines))
                sys.stdout.flush()
            printed += len(lines)


def record_line(record: ConsumerRecord, generation: int, member: str) -> str:
    line: dict[str, Any] = {
        "generation": generation,
        "member": member,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    for name, data in (("key", record.key), ("value", record.value)):
        if data is None:
            line[name] = None
            continue
        try:
            line[name] = data.decode()
        except UnicodeDecodeError:
            line[name + "_base64"] = base64.b64encode(data).decode()
    return json.dumps(line) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    asyncio.run(consume(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
