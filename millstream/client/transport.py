"""HTTP to the brokers: one aiohttp session, JSON and raw-batch requests, errors as types.

Used by :mod:`~millstream.client.admin`, :mod:`~millstream.client.producer`, the consumer's
:mod:`~millstream.client.fetcher` and :mod:`~millstream.client.group_api`; nothing above this
module sees aiohttp. Every failure leaves here as a
:class:`~millstream.errors.MillstreamError`: the broker's JSON error becomes the class of its
``code`` (:func:`~millstream.errors.for_code`), a refused or dropped connection becomes
``BrokerUnavailable`` and a request that outlives its timeout becomes ``RequestTimedOut``; both
are retriable, which is what the producer's and consumer's retry loops look at.

Every request has a route (a partition's or a group's, read from its path; a broker named by
the caller; or none): the :class:`~.metadata.Router` picks the broker, and the transport
retries, a bounded number of times, what was certainly not applied: a request the broker
answered ``not_leader`` or ``not_coordinator`` (after the router refreshed its metadata) and
one whose connection could not be made (when the route now leads elsewhere). Other retries
are the callers' to decide, with one exception: a GET is tried a second time when a pooled
keep-alive connection turns out to have been closed by the broker (a restart).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy

from millstream import errors
from millstream.client.metadata import CLUSTER_PATH, PartitionRoute, Route, Router, route_of
from millstream.client.models import DEFAULT_URL

BATCH_MEDIA_TYPE: Final = "application/vnd.kafka.record-batch"
NEXT_OFFSET_HEADER: Final = "Millstream-Next-Offset"
HIGH_WATERMARK_HEADER: Final = "Millstream-High-Watermark"

# A sequence of pairs repeats a name (``?topic=a&topic=b``).
Params = Mapping[str, str | int] | Sequence[tuple[str, str | int]]
# Tries of one routed request: the first, then after each redirect or unreachable broker.
ROUTE_ATTEMPTS: Final = 4

# When the error body is not ours (a proxy, an old broker), the status still says something.
_CODE_FOR_STATUS: Final = {
    401: errors.Unauthorized.code,
    403: errors.Forbidden.code,
    404: errors.NotFound.code,
    409: errors.TopicExists.code,
    421: errors.Misdirected.code,
    413: errors.BodyTooLarge.code,
    415: errors.UnsupportedMediaType.code,
    416: errors.OffsetOutOfRange.code,
    502: errors.BrokerUnavailable.code,
    503: errors.BrokerUnavailable.code,
    504: errors.RequestTimedOut.code,
}


def topic_path(topic: str, *rest: str | int) -> str:
    """``/v1/topics/<topic>/...`` with the topic name escaped for a path segment."""
    return "/".join(("/v1/topics", quote(topic, safe=""), *map(str, rest)))


def group_path(group: str, *rest: str | int) -> str:
    """``/v1/groups/<group>/...`` with the group id escaped for a path segment."""
    return "/".join(("/v1/groups", quote(group, safe=""), *map(str, rest)))


def error_from_response(status: int, body: bytes) -> errors.MillstreamError:
    """The error a non-2xx response stands for."""
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
        error = errors.for_code(code)
        if issubclass(error, errors.Misdirected):
            return error(message, _broker_of(detail.get("broker")))
        if not errors.is_known(code):
            # A newer broker's code: the class its HTTP status stands for (so retries and
            # 404 handling still work), keeping the broker's own code for the caller.
            unknown = errors.for_code(_code_for_status(status))(message)
            unknown.code = code  # type: ignore[misc]
            return unknown
    except (ValueError, KeyError, TypeError):
        code = _code_for_status(status)
        text = body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text}" if text else "")
    return errors.for_code(code)(message)


def _code_for_status(status: int) -> str:
    """The code of the error an HTTP status stands for, when the body does not say one we know."""
    default = errors.InvalidRequest.code if 400 <= status < 500 else errors.MillstreamError.code
    return _CODE_FOR_STATUS.get(status, default)


def _broker_of(body: Any) -> errors.BrokerAddress | None:
    try:
        return errors.BrokerAddress(int(body["id"]), str(body["url"]))
    except (KeyError, TypeError, ValueError):
        return None


class _NotConnected(Exception):
    """No connection could be made: nothing was sent, so any request may be tried elsewhere."""

    def __init__(self, cause: aiohttp.ClientConnectorError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise errors.MillstreamError(f"the broker sent invalid JSON: {exc}") from None


def bootstrap_urls(text: str) -> tuple[str, ...]:
    """The broker URLs of ``text``: one, or several comma-separated; each http(s)://."""
    urls = tuple(dict.fromkeys(u.strip().rstrip("/") for u in text.split(",") if u.strip()))
    if not urls:
        raise errors.InvalidRequest(f"no broker URL in {text!r}")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise errors.InvalidRequest(f"broker URL must start with http:// or https://: {url!r}")
    return urls


class Transport:
    """The brokers of a cluster (or one standalone broker), reached from ``url``, and a pooled
    aiohttp session, opened on first use. ``url`` may list several brokers, comma-separated
    (Kafka's ``bootstrap.servers``): the first that answers tells the client of the others.

    Not thread-safe: use it from the event loop it was first used on. Clients share one when
    given it (``Producer(transport)``); whoever created it closes it.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        connections: int = 100,
    ) -> None:
        self.urls = bootstrap_urls(url)
        self.url = self.urls[0]
        self.timeout_s = timeout_s
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.router = Router(self.urls, self._fetch_cluster)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0)
            # The broker's JSON is read with json.loads; aiohttp's own decoding is not used.
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        route: Route | None = None,
        params: Params | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request to the broker for ``route`` (by default: the route of ``path``,
        see :func:`~.metadata.route_of`); a non-2xx answer is raised as the error it carries."""
        route = route or route_of(path)
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        attempt = 0
        while True:
            attempt += 1
            base = await self.router.url_for(route)
            try:
                return await self._send(base, method, path, params, data, headers, timeout_s)
            except errors.Misdirected as exc:
                if route is None or attempt >= ROUTE_ATTEMPTS:
                    raise
                await self.router.misdirected(route, exc.broker)
            except _NotConnected as exc:
                if attempt >= ROUTE_ATTEMPTS or not await self.router.unreachable(base, route):
                    raise self._unavailable(exc.cause, base) from None

    async def _fetch_cluster(self, base: str) -> Any:
        """The router's metadata lookup: one GET, not routed, not retried."""
        try:
            reply = await self._send(base, "GET", CLUSTER_PATH, None, None, None, None)
        except _NotConnected as exc:
            raise self._unavailable(exc.cause, base) from None
        return reply.json()

    async def _send(
        self,
        base: str,
        method: str,
        path: str,
        params: Params | None,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> Reply:
        url = base + path
        limit = aiohttp.ClientTimeout(total=timeout_s if timeout_s is not None else self.timeout_s)
        for attempt in (1, 2):
            try:
                async with self._open().request(
                    method, url, params=params, data=data, headers=headers, timeout=limit
                ) as resp:
                    body = await resp.read()
                    if resp.status >= 300:
                        raise error_from_response(resp.status, body)
                    return Reply(resp.status, body, resp.headers)
            except aiohttp.ServerDisconnectedError as exc:
                # A keep-alive connection the broker closed while idle: one fresh try is safe
                # for a read. A write may have been applied, so its caller decides.
                if method == "GET" and attempt == 1:
                    continue
                raise self._unavailable(exc, base) from None
            except TimeoutError:  # before the next clause: aiohttp's timeouts are both
                raise errors.RequestTimedOut(
                    f"no answer from {base} to {method} {path} within {limit.total:g}s"
                ) from None
            except aiohttp.ClientConnectorError as exc:
                raise _NotConnected(exc) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise self._unavailable(exc, base) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: BaseException, base: str) -> errors.BrokerUnavailable:
        reason = str(exc) or type(exc).__name__
        return errors.BrokerUnavailable(f"cannot reach the broker at {base}: {reason}")

    async def call_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        route: Route | None = None,
        params: Params | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """A JSON request; the decoded JSON answer (None for 204 No Content)."""
        reply = await self.request(
            method, path, route=route, params=params, json_body=body, timeout_s=timeout_s
        )
        return None if reply.status == 204 or not reply.body else reply.json()

    async def post_batches(
        self, topic: str, partition: int, data: bytes, *, acks: str, timeout_s: float
    ) -> tuple[int, int]:
        """Append raw batches to a partition; returns (base offset, last offset)."""
        reply = await self.request(
            "POST",
            topic_path(topic, "partitions", partition, "batches"),
            params={"acks": acks},
            data=data,
            headers={"Content-Type": BATCH_MEDIA_TYPE},
            timeout_s=timeout_s,
        )
        answer = reply.json()
        try:
            return int(answer["base_offset"]), int(answer["last_offset"])
        except (KeyError, TypeError, ValueError):
            raise errors.MillstreamError(f"unexpected produce answer: {answer!r}") from None

    async def fetch_batches(
        self, topic: str, partition: int, offset: int, *, max_bytes: int, wait_ms: int
    ) -> Fetched:
        """Raw batches from ``offset`` on (the first may start before it), long-polling."""
        reply = await self.request(
            "GET",
            topic_path(topic, "partitions", partition, "records"),
            params={"offset": offset, "max_bytes": max_bytes, "wait_ms": wait_ms},
            headers={"Accept": BATCH_MEDIA_TYPE},
            timeout_s=self.timeout_s + wait_ms / 1000,
        )
        next_offset = _int_header(reply, NEXT_OFFSET_HEADER)
        high_watermark = _int_header(reply, HIGH_WATERMARK_HEADER)
        return Fetched(reply.body, next_offset, high_watermark)

    async def stream_batches(self, topic: str, partition: int, offset: int) -> AsyncIterator[bytes]:
        """Raw batches from ``offset`` on, as the broker appends them, until it ends the
        stream. Chunks are cut wherever TCP cut them: the caller reassembles whole batches.
        Not retried here: a misdirected or unreachable broker updates the routes and is
        raised, and the caller's next stream goes where the metadata says."""
        route = PartitionRoute(topic, partition)
        base = await self.router.url_for(route)
        url = base + topic_path(topic, "partitions", partition, "records")
        # No total timeout: the stream is meant to stay open while the log is quiet.
        limit = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        try:
            async with self._open().get(
                url,
                params={"offset": offset, "follow": "true"},
                headers={"Accept": BATCH_MEDIA_TYPE},
                timeout=limit,
            ) as resp:
                if resp.status >= 300:
                    raise error_from_response(resp.status, await resp.read())
                async for chunk in resp.content.iter_any():
                    yield chunk
        except errors.Misdirected as exc:
            await self.router.misdirected(route, exc.broker)
            raise
        except TimeoutError:
            raise errors.RequestTimedOut(f"cannot connect to {base}") from None
        except aiohttp.ClientConnectorError as exc:
            await self.router.unreachable(base, route)
            raise self._unavailable(exc, base) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise self._unavailable(exc, base) from None


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    next_offset: int | None
    high_watermark: int | None


def _int_header(reply: Reply, name: str) -> int | None:
    raw = reply.headers.get(name)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


async def sleep_backoff(attempt: int, base_s: float, max_s: float) -> None:
    """Exponential backoff: base, 2*base, 4*base... capped at ``max_s``."""
    await asyncio.sleep(min(max_s, base_s * (2 ** max(0, attempt - 1))))
