"""``millstream topics create|list|describe|alter|delete``: topic administration.

Called by :mod:`millstream.cli.main`; each subcommand is one :class:`~millstream.client.Admin`
call and a rendering of its answer, a table (``kubectl`` style) by default or the broker's
JSON with ``-o json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, TypeVar

from millstream.cli.options import (
    broker_url,
    config_item,
    output_option,
    positive_int,
    url_options,
)
from millstream.cli.output import fields, human_bytes, print_json, table
from millstream.client.admin import Admin
from millstream.client.models import TopicDescription

if TYPE_CHECKING:
    from millstream.cli.options import Commands

T = TypeVar("T")


def register(commands: Commands) -> None:
    url = url_options()
    parser = commands.add_parser(
        "topics", help="create, list, describe, alter and delete topics", parents=[url]
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a topic", parents=[url])
    create.add_argument("name")
    create.add_argument("--partitions", type=positive_int, default=1, help="default: 1")
    _config_option(create)
    output_option(create)
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="list topics", parents=[url])
    output_option(listing)
    listing.set_defaults(run=_list)

    describe = actions.add_parser(
        "describe", help="show a topic's partitions and config", parents=[url]
    )
    describe.add_argument("name")
    output_option(describe)
    describe.set_defaults(run=_describe)

    alter = actions.add_parser("alter", help="add partitions or change settings", parents=[url])
    alter.add_argument("name")
    alter.add_argument("--partitions", type=positive_int, help="the new, larger, partition count")
    _config_option(alter)
    output_option(alter)
    alter.set_defaults(run=_alter)

    delete = actions.add_parser("delete", help="delete a topic and its data", parents=[url])
    delete.add_argument("name")
    delete.set_defaults(run=_delete)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=config_item,
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=VALUE",
        help="topic settings, e.g. retention.ms=86400000 (repeatable)",
    )


def _call(args: argparse.Namespace, action: Callable[[Admin], Awaitable[T]]) -> T:
    async def go() -> T:
        async with Admin(broker_url(args)) as admin:
            return await action(admin)

    return asyncio.run(go())


def _create(args: argparse.Namespace) -> int:
    config = dict(args.config)
    topic = _call(args, lambda admin: admin.create_topic(args.name, args.partitions, config))
    if args.output == "json":
        print_json(_description_json(topic))
    else:
        print(f'topic "{topic.name}" created ({topic.partition_count} partitions)')
    return 0


def _list(args: argparse.Namespace) -> int:
    topics = _call(args, lambda admin: admin.list_topics())
    if args.output == "json":
        print_json({"topics": [asdict(t) for t in topics]})
    elif not topics:
        print("No topics found.", file=sys.stderr)
    else:
        print(table(("NAME", "PARTITIONS"), [(t.name, t.partitions) for t in topics]))
    return 0


def _describe(args: argparse.Namespace) -> int:
    topic = _call(args, lambda admin: admin.describe_topic(args.name))
    if args.output == "json":
        print_json(_description_json(topic))
    else:
        print(render_description(topic))
    return 0


def _alter(args: argparse.Namespace) -> int:
    config = dict(args.config)
    topic = _call(
        args, lambda admin: admin.alter_topic(args.name, partitions=args.partitions, config=config)
    )
    if args.output == "json":
        print_json(_description_json(topic))
    else:
        print(f'topic "{topic.name}" altered ({topic.partition_count} partitions)')
    return 0


def _delete(args: argparse.Namespace) -> int:
    _call(args, lambda admin: admin.delete_topic(args.name))
    print(f'topic "{args.name}" deleted')
    return 0


def _description_json(topic: TopicDescription) -> dict[str, object]:
    partitions = [
        {k: v for k, v in asdict(p).items() if k != "broker" or v is not None}
        for p in topic.partitions
    ]
    return {"name": topic.name, "partitions": partitions, "config": dict(topic.config)}


def render_description(topic: TopicDescription) -> str:
    """``kubectl describe``-style: the topic's fields, its config, then a partition table."""
    head = fields([("Name", topic.name), ("Partitions", topic.partition_count), ("Config", "")])
    config = fields(sorted(topic.config.items()), indent=2)
    clustered = any(p.broker is not None for p in topic.partitions)
    rows = [
        (
            p.partition,
            p.earliest_offset,
            p.latest_offset,
            p.latest_offset - p.earliest_offset,
            human_bytes(p.size_bytes),
            *((p.broker,) if clustered else ()),
        )
        for p in topic.partitions
    ]
    columns = ("PARTITION", "EARLIEST", "LATEST", "RECORDS", "SIZE")
    partitions = table((*columns, "BROKER") if clustered else columns, rows)
    return "\n".join(part for part in (head, config, "", partitions) if part is not None)
