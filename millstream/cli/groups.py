"""``millstream groups list|describe|reset-offsets|delete``: consumer-group administration.

Called by :mod:`millstream.cli.main`. Each subcommand is a call or two of
:class:`~millstream.client.Admin` and a rendering of the answer: a ``kubectl``-style table or
description by default, JSON with ``-o json``. ``reset-offsets`` works as Kafka's
``kafka-consumer-groups --reset-offsets``: it shows the plan unless ``--execute`` is given.
The broker resets whole topics itself; a reset to an explicit offset, or of chosen partitions
(``--topic orders:0,2``), is resolved here into explicit offsets first, so the broker checks
and applies every form the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from millstream.cli.options import (
    broker_url,
    non_negative_int,
    output_option,
    timestamp_ms,
    url_options,
)
from millstream.cli.output import fields, print_json, table
from millstream.client.admin import Admin, OffsetSpec, ResetTo
from millstream.client.models import (
    GroupDescription,
    GroupSummary,
    MemberDescription,
    TopicPartition,
)

if TYPE_CHECKING:
    from millstream.cli.options import Commands

TopicSpec = tuple[str, tuple[int, ...]]  # a topic and its chosen partitions (none: all)


def register(commands: Commands) -> None:
    url = url_options()
    parser = commands.add_parser(
        "groups", help="list, describe, reset and delete consumer groups", parents=[url]
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list consumer groups", parents=[url])
    output_option(listing)
    listing.set_defaults(run=_list)

    describe = actions.add_parser(
        "describe", help="show a group's members, assignment, offsets and lag", parents=[url]
    )
    describe.add_argument("group")
    output_option(describe)
    describe.set_defaults(run=_describe)

    reset = actions.add_parser(
        "reset-offsets",
        help="move a group's committed offsets (the group must have no live members)",
        description="Show (default, or --dry-run) or apply (--execute) new committed offsets.",
        parents=[url],
    )
    _reset_options(reset)
    reset.set_defaults(run=_reset)

    delete = actions.add_parser(
        "delete", help="delete a group without members, and its offsets", parents=[url]
    )
    delete.add_argument("group")
    delete.set_defaults(run=_delete)


def _reset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group")
    to = parser.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the earliest offset in the log")
    to.add_argument("--to-latest", action="store_true", help="the log end: skip everything")
    to.add_argument(
        "--to-datetime",
        type=timestamp_ms,
        metavar="ISO8601",
        help="the first record at or after this time (local time without an offset)",
    )
    to.add_argument(
        "--to-timestamp", type=timestamp_ms, metavar="MS", help="the same, in epoch milliseconds"
    )
    to.add_argument("--to-offset", type=non_negative_int, metavar="N", help="this offset")
    parser.add_argument(
        "--topic",
        type=topic_spec,
        action="append",
        metavar="TOPIC[:P,...]",
        help="reset this topic, or these partitions of it (repeatable; "
        "default: every topic the group has offsets for)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show the new offsets (default)")
    mode.add_argument("--execute", action="store_true", help="apply the new offsets")
    output_option(parser)


def topic_spec(text: str) -> TopicSpec:
    """``orders`` (every partition) or ``orders:0,2`` (those partitions)."""
    topic, sep, rest = text.rpartition(":") if ":" in text else (text, "", "")
    if not topic:
        raise argparse.ArgumentTypeError(f"expected TOPIC or TOPIC:P,P..., got {text!r}")
    if not sep:
        return topic, ()
    try:
        partitions = tuple(sorted({int(p) for p in rest.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"partitions must be integers: {text!r}") from None
    if any(p < 0 for p in partitions):
        raise argparse.ArgumentTypeError(f"partitions are not negative: {text!r}")
    return topic, partitions


def _admin_call(args: argparse.Namespace, action: Any) -> Any:
    async def go() -> Any:
        async with Admin(broker_url(args)) as admin:
            return await action(admin)

    return asyncio.run(go())


def _list(args: argparse.Namespace) -> int:
    groups: list[GroupSummary] = _admin_call(args, lambda admin: admin.list_groups())
    if args.output == "json":
        print_json({"groups": [_summary_json(g) for g in groups]})
    elif not groups:
        print("No groups found.", file=sys.stderr)
    else:
        rows = [(g.group, g.state, g.members, g.protocol_type or "-") for g in groups]
        print(table(("NAME", "STATE", "MEMBERS", "PROTOCOL-TYPE"), rows))
    return 0


def _describe(args: argparse.Namespace) -> int:
    group: GroupDescription = _admin_call(args, lambda admin: admin.describe_group(args.group))
    if args.output == "json":
        print_json(description_json(group))
    else:
        print(render_description(group))
    return 0


def _delete(args: argparse.Namespace) -> int:
    _admin_call(args, lambda admin: admin.delete_group(args.group))
    print(f'group "{args.group}" deleted')
    return 0


def _reset(args: argparse.Namespace) -> int:
    dry_run = not args.execute
    offsets: dict[TopicPartition, int] = _admin_call(args, lambda a: _reset_with(a, args, dry_run))
    planned = sorted(offsets.items())
    if args.output == "json":
        print_json(
            {
                "group": args.group,
                "dry_run": dry_run,
                "offsets": [{"topic": t, "partition": p, "offset": o} for (t, p), o in planned],
            }
        )
    else:
        rows = [(args.group, t, p, o) for (t, p), o in planned]
        print(table(("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"), rows))
    if dry_run:
        print("dry run: nothing was changed (add --execute to apply)", file=sys.stderr)
    return 0


async def _reset_with(admin: Admin, args: argparse.Namespace, dry_run: bool) -> dict[Any, int]:
    specs: list[TopicSpec] = args.topic or []
    to, at = reset_target(args)
    if to == "offsets" or any(partitions for _, partitions in specs):
        chosen = await _chosen_partitions(admin, args.group, specs)
        if to == "offsets":
            assert isinstance(at, int)
            offsets = dict.fromkeys(chosen, at)
        else:
            found = await asyncio.gather(*(admin.offset_for(t, p, at) for t, p in chosen))
            offsets = dict(zip(chosen, found, strict=True))
        return await admin.reset_offsets(args.group, "offsets", offsets=offsets, dry_run=dry_run)
    return await admin.reset_offsets(
        args.group,
        to,
        topics=[topic for topic, _ in specs] or None,
        timestamp=at if to == "timestamp" and isinstance(at, int) else None,
        dry_run=dry_run,
    )


def reset_target(args: argparse.Namespace) -> tuple[ResetTo, OffsetSpec]:
    """The broker's ``to``, and the offset (``--to-offset``), time (ms) or end a partition's
    new offset is found at."""
    if args.to_earliest:
        return "earliest", "earliest"
    if args.to_latest:
        return "latest", "latest"
    if args.to_offset is not None:  # the one form where ``at`` is an offset, not a time
        return "offsets", int(args.to_offset)
    moment = args.to_datetime if args.to_datetime is not None else args.to_timestamp
    return "timestamp", int(moment)


async def _chosen_partitions(
    admin: Admin, group: str, specs: list[TopicSpec]
) -> list[TopicPartition]:
    if not specs:  # as the broker does: the topics the group has offsets for
        committed = await admin.committed_offsets(group)
        specs = [(topic, ()) for topic in sorted({tp.topic for tp in committed})]
    chosen: list[TopicPartition] = []
    for topic, partitions in specs:
        if not partitions:
            partitions = tuple(range((await admin.topic_metadata(topic)).partition_count))
        chosen += [TopicPartition(topic, p) for p in partitions]
    return chosen


# --- rendering ---------------------------------------------------------------------------------


def _summary_json(group: GroupSummary) -> dict[str, Any]:
    return {
        "group": group.group,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "members": group.members,
    }


def description_json(group: GroupDescription) -> dict[str, Any]:
    """The description in the broker's own JSON shape."""
    return {
        "group": group.group,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "protocol": group.protocol,
        "generation": group.generation,
        "leader": group.leader,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "session_timeout_ms": m.session_timeout_ms,
                "assignment": None
                if m.assignment is None
                else [
                    {"topic": topic, "partitions": partitions}
                    for topic, partitions in _by_topic(m.assignment)
                ],
            }
            for m in group.members
        ],
        "offsets": [
            {
                "topic": o.topic,
                "partition": o.partition,
                "committed": o.committed,
                "log_end_offset": o.log_end_offset,
                "lag": o.lag,
                "member_id": o.member_id,
            }
            for o in group.offsets
        ],
        "lag": group.lag,
    }


def render_description(group: GroupDescription) -> str:
    """``kubectl describe``-style: the group's fields, a member table, an offset table."""
    head = fields(
        [
            ("Group", group.group),
            ("State", group.state),
            ("Protocol type", _dash(group.protocol_type)),
            ("Protocol", _dash(group.protocol)),
            ("Generation", group.generation),
            ("Leader", _dash(group.leader)),
            ("Members", len(group.members)),
            ("Lag", _dash(group.lag)),
        ]
    )
    parts = [head]
    if group.members:
        members = [
            (m.member_id, _dash(m.client_id), _dash(m.client_host), render_assignment(m))
            for m in group.members
        ]
        parts += ["", table(("MEMBER", "CLIENT", "HOST", "ASSIGNMENT"), members)]
    if group.offsets:
        offsets = [
            (
                o.topic,
                o.partition,
                _dash(o.committed),
                _dash(o.log_end_offset),
                _dash(o.lag),
                _dash(o.member_id),
            )
            for o in group.offsets
        ]
        header = ("TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER")
        parts += ["", table(header, offsets)]
    return "\n".join(parts)


def render_assignment(member: MemberDescription) -> str:
    """``orders:0,1 audit:0``; ``-`` for none."""
    if not member.assignment:
        return "-"
    return " ".join(
        f"{topic}:{','.join(map(str, partitions))}"
        for topic, partitions in _by_topic(member.assignment)
    )


def _by_topic(tps: tuple[TopicPartition, ...]) -> list[tuple[str, list[int]]]:
    grouped: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        grouped.setdefault(topic, []).append(partition)
    return list(grouped.items())


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
