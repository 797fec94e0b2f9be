"""Which broker each request goes to: the cluster's metadata, as the client knows it.

Used by :class:`~millstream.client.transport.Transport`, which asks a :class:`Router` for the
URL of every request and tells it what went wrong. Producers, consumers, group members and the
admin know nothing of it: a request's path says its route (:func:`route_of`: a partition's
requests, a group's); only the admin's fan-outs name a broker (:class:`BrokerRoute`).

- The metadata (``GET /v1/cluster``) is fetched once, lazily, from the first of the URLs the
  client was given that answers (Kafka's ``bootstrap.servers``; then any broker it learnt of
  if those are down). A standalone broker says ``"mode": "standalone"`` (a broker too old to
  have the route answers 404): then every request goes to the bootstrap URL, as before
  clusters existed.
- A partition's requests go to the broker it is placed on, a group's to its coordinator (the
  broker serving the group's partition of the group-offsets topic,
  :func:`~millstream.internal_topics.group_offsets_partition`, as the brokers compute it);
  anything else, and a partition or group the metadata does not place yet, to the bootstrap
  broker, which serves or redirects it.
- ``not_leader`` / ``not_coordinator``: the metadata is refreshed and the broker the error
  names is used for that route until the next refresh (the operator may have pushed to that
  broker first). A broker that cannot be connected to is avoided for a while and the metadata
  refreshed from another. The transport bounds how often it retries.

Not thread-safe: used on the transport's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from millstream import errors
from millstream.internal_topics import GROUP_OFFSETS_TOPIC, group_offsets_partition

log = logging.getLogger("millstream.client.metadata")

CLUSTER_PATH: Final = "/v1/cluster"
# A refresh right after another learns nothing new: misdirected requests in a burst share one.
_MIN_REFRESH_INTERVAL_S: Final = 0.2
# How long a broker that refused a connection is passed over for requests that may go anywhere.
_AVOID_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class PartitionRoute:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupRoute:
    group: str


@dataclass(frozen=True, slots=True)
class BrokerRoute:
    broker_id: int


Route = PartitionRoute | GroupRoute | BrokerRoute


def route_of(path: str) -> PartitionRoute | GroupRoute | None:
    """The route of an API path: ``/v1/topics/{t}/partitions/{p}/...`` is the partition's,
    ``/v1/groups/{g}[/...]`` the group's; anything else may go to any broker."""
    parts = path.split("?", 1)[0].split("/")
    if (
        len(parts) >= 6
        and parts[1:3] == ["v1", "topics"]
        and parts[4] == "partitions"
        and parts[5].isascii()
        and parts[5].isdigit()
    ):
        return PartitionRoute(unquote(parts[3]), int(parts[5]))
    if len(parts) >= 4 and parts[1:3] == ["v1", "groups"] and parts[3]:
        return GroupRoute(unquote(parts[3]))
    return None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A cluster's metadata: broker URLs by id, and each topic's brokers by partition."""

    brokers: Mapping[int, str]
    placement: Mapping[str, tuple[int, ...]]
    epoch: int = 0

    @classmethod
    def from_json(cls, body: Any) -> ClusterView | None:
        """The view ``GET /v1/cluster`` gives; None for a standalone broker."""
        try:
            if body.get("mode") != "cluster":
                return None
            brokers = {int(b["id"]): str(b["url"]).rstrip("/") for b in body["brokers"]}
            placement = {
                str(t["name"]): tuple(
                    int(t["placement"][str(p)]) for p in range(int(t["partitions"]))
                )
                for t in body["topics"]
            }
            return cls(brokers, placement, int(body.get("epoch") or 0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise errors.MillstreamError(f"unexpected cluster metadata: {exc!r}") from None

    def url_for(self, route: Route) -> str | None:
        """The URL of the broker for ``route``; None if the view does not say."""
        if isinstance(route, BrokerRoute):
            return self.brokers.get(route.broker_id)
        if isinstance(route, GroupRoute):
            offsets = self.placement.get(GROUP_OFFSETS_TOPIC)
            if not offsets:
                return None
            partition = group_offsets_partition(route.group, len(offsets))
            route = PartitionRoute(GROUP_OFFSETS_TOPIC, partition)
        brokers = self.placement.get(route.topic)
        if brokers is None or not 0 <= route.partition < len(brokers):
            return None
        return self.brokers.get(brokers[route.partition])


Fetch = Callable[[str], Awaitable[Any]]


class Router:
    """Routes for one client. ``fetch(url)`` returns the JSON of ``GET <url>/v1/cluster``
    (raising the transport's errors)."""

    def __init__(self, bootstrap: str | Sequence[str], fetch: Fetch) -> None:
        self.bootstraps = (bootstrap,) if isinstance(bootstrap, str) else tuple(bootstrap)
        if not self.bootstraps:
            raise ValueError("no bootstrap URL")
        self.bootstrap = self.bootstraps[0]
        self._fetch = fetch
        self.view: ClusterView | None = None
        self._loaded_at: float | None = None  # monotonic time of the last successful load
        self._loading: asyncio.Future[None] | None = None
        self._hints: dict[Route, str] = {}
        self._avoid: dict[str, float] = {}  # URL -> until when (monotonic)

    @property
    def standalone(self) -> bool:
        return self._loaded_at is not None and self.view is None

    async def url_for(self, route: Route | None) -> str:
        if route is None:
            return self._any_url()
        if self._loaded_at is None:
            await self.refresh()
        hint = self._hints.get(route)
        if hint is not None:
            return hint
        found = None if self.view is None else self.view.url_for(route)
        return found or self._any_url()

    async def broker_ids(self) -> list[int]:
        """The ids of the cluster's brokers (none for a standalone broker)."""
        if self._loaded_at is None:
            await self.refresh()
        return [] if self.view is None else sorted(self.view.brokers)

    def _any_url(self) -> str:
        now = time.monotonic()
        for url in self._known_urls():
            if self._avoid.get(url, 0.0) <= now:
                return url
        return self.bootstrap

    def _known_urls(self) -> list[str]:
        """The bootstrap URLs, then those of the brokers the metadata lists, by id."""
        view = self.view
        brokers = [view.brokers[b] for b in sorted(view.brokers)] if view is not None else []
        return list(dict.fromkeys([*self.bootstraps, *brokers]))

    # --- what went wrong ----------------------------------------------------------------

    async def misdirected(self, route: Route, broker: errors.BrokerAddress | None) -> None:
        """The broker for ``route`` said another serves it (``broker``, if it named one)."""
        await self.refresh(quiet=True)
        if broker is not None:
            self._hints[route] = broker.url.rstrip("/")

    async def unreachable(self, url: str, route: Route | None) -> bool:
        """``url`` refused a connection: avoid it a while, refresh the metadata elsewhere.
        Whether ``route`` now goes to another URL (worth trying at once)."""
        self._avoid[url] = time.monotonic() + _AVOID_S
        self._hints = {r: u for r, u in self._hints.items() if u != url}
        await self.refresh(quiet=True)
        return await self.url_for(route) != url

    # --- loading ------------------------------------------------------------------------

    async def refresh(self, *, quiet: bool = False) -> None:
        """Fetch the metadata again (once for all callers at the same moment). ``quiet``:
        keep the old metadata if no broker answers, rather than raise."""
        loading = self._loading
        if loading is None or loading.done():
            loaded = self._loaded_at
            if loaded is not None and time.monotonic() - loaded < _MIN_REFRESH_INTERVAL_S:
                return
            loading = self._loading = asyncio.ensure_future(self._load())
            # Its error is for whoever awaits it; none may, if they were all cancelled.
            loading.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.shield(loading)
        except errors.MillstreamError:
            if not quiet:
                raise

    async def _load(self) -> None:
        now = time.monotonic()
        urls = sorted(self._known_urls(), key=lambda u: self._avoid.get(u, 0.0) > now)
        failure: errors.MillstreamError | None = None
        for url in urls:  # those not avoided first
            try:
                body = await self._fetch(url)
            except errors.NotFound:
                body = {"mode": "standalone"}  # a broker from before clusters
            except errors.MillstreamError as exc:
                if not exc.retriable:
                    raise
                failure = exc
                continue
            self.view = ClusterView.from_json(body)
            self._hints.clear()
            self._loaded_at = time.monotonic()
            return
        assert failure is not None
        raise failure
