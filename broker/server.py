"""The broker process: open the data directory, serve HTTP, keep house, shut down cleanly.

Called by ``millstream serve`` (and so by tests, which start real processes). Start-up order:
read the admin token, recover every log, replay the stored cluster metadata (a broker of a
cluster hosts the partitions placed on it, with no operator needed) and the groups' committed
offsets, then listen, then report the address on stdout; shutdown order: refuse new work and
report not-ready, let in-flight requests finish, then fsync and close every log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from millstream.broker.cluster.node import ClusterNode
from millstream.broker.cluster.store import MetadataStore
from millstream.broker.groups.coordinator import GroupCoordinator, ensure_offsets_topic
from millstream.broker.groups.settings import GroupSettings
from millstream.broker.http.app import make_app
from millstream.broker.http.auth import AdminAuth
from millstream.broker.http.keys import STOPPING, HttpSettings
from millstream.broker.http.metrics import BrokerMetrics
from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager
from millstream.internal_topics import is_internal

log = logging.getLogger("millstream.broker")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    # This broker's id in a cluster; None for a standalone broker (or one that takes the id
    # its stored cluster metadata was pushed to).
    broker_id: int | None = None
    # The operator's token for the admin routes; without it they are closed.
    admin_token_file: Path | None = None
    # How often closed segments are checked for retention and active ones for age.
    housekeeping_interval_s: float = 30.0
    # Grace for in-flight requests at shutdown; long polls are ended at once.
    shutdown_timeout_s: float = 10.0
    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    http: HttpSettings = field(default_factory=HttpSettings)
    groups: GroupSettings = field(default_factory=GroupSettings)


async def _housekeeping(logs: LogManager, groups: GroupCoordinator, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        now = time.time_ns() // 1_000_000
        try:
            logs.maybe_roll(now)
            deleted = logs.enforce_retention(now)
            if deleted:
                log.info("retention removed %d segment(s)", deleted)
            await groups.maintain()
        except Exception:  # keep the broker serving; the next round tries again
            log.exception("housekeeping failed")


async def serve(settings: BrokerSettings, stop: asyncio.Event) -> None:
    """Run a broker until ``stop`` is set."""
    started = time.monotonic()
    admin_auth = AdminAuth(settings.admin_token_file)
    metrics = BrokerMetrics()
    logs = LogManager(settings.data_dir, settings.topic_defaults, on_sync=metrics.observe_fsync)
    logs.open()
    cluster = ClusterNode(logs, MetadataStore(settings.data_dir), settings.broker_id)
    try:
        cluster.reconcile()
    except BaseException:
        await logs.close()
        raise
    metrics.watch_logs(logs)
    if not cluster.managed and cluster.broker_id is None:
        # A broker given an id is a cluster's, waiting for the operator, which places it.
        ensure_offsets_topic(logs)
    coordinator = GroupCoordinator(logs, settings.groups)
    cluster.on_change(coordinator.placement_changed)
    coordinator.start()
    await coordinator.adopt_legacy_offsets(settings.data_dir / "internal" / "group-offsets")
    metrics.watch_groups(coordinator)
    app = make_app(
        logs, coordinator, metrics, settings.http, cluster=cluster, admin_auth=admin_auth
    )
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(
        f"millstream broker listening on http://{host}:{port} "
        f"(data dir: {settings.data_dir.resolve()})",
        flush=True,
    )
    log.info(
        "ready in %.2fs, %d topic(s), %s",
        time.monotonic() - started,
        sum(1 for name in logs.topic_names() if not is_internal(name)),
        f"broker {cluster.broker_id} of a cluster" if cluster.managed else "standalone",
    )
    housekeeping = asyncio.create_task(
        _housekeeping(logs, coordinator, settings.housekeeping_interval_s)
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        app[STOPPING].set()
        housekeeping.cancel()
        await runner.cleanup()
        await coordinator.close()
        await logs.close()
        log.info("stopped; all logs flushed")


def run(settings: BrokerSettings) -> None:
    """Serve until SIGINT or SIGTERM. Blocks."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
