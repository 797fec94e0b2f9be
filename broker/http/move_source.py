"""The source of a partition move, over HTTP: another broker's admin partition routes.

The HTTP side of :class:`~millstream.broker.cluster.mover.Source`, created by the app
(``broker/http/app.py``) for the :class:`~millstream.broker.cluster.mover.Mover`. A receiving
broker calls its source's routes of :mod:`~millstream.broker.http.replicas` with the admin
token the brokers of a cluster share:

- ``GET  /v1/admin/partitions/{topic}/{partition}/records`` raw batches, offsets as stored;
- ``POST /v1/admin/partitions/{topic}/{partition}/fence`` stop writes, give the final end;
- ``DELETE /v1/admin/partitions/{topic}/{partition}`` drop the retired copy.

A JSON error becomes the class of its code (:func:`millstream.errors.for_code`); a broker that
cannot be reached, ``BrokerUnavailable``; one too slow, ``RequestTimedOut``: both retriable.
One pooled aiohttp session, opened on first use and closed with the app.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from millstream import errors
from millstream.broker.cluster.mover import SourceChunk
from millstream.broker.http.auth import AdminAuth

BATCH_MEDIA_TYPE: Final = "application/vnd.kafka.record-batch"
LOG_START_HEADER: Final = "Millstream-Log-Start-Offset"
HIGH_WATERMARK_HEADER: Final = "Millstream-High-Watermark"


class HttpMoveSource:
    def __init__(self, auth: AdminAuth, timeout_s: float = 30.0) -> None:
        self._auth = auth
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        url: str,
        topic: str,
        partition: int,
        offset: int | None,
        max_bytes: int,
        wait_ms: int,
    ) -> SourceChunk:
        params = {"max_bytes": str(max_bytes), "wait_ms": str(wait_ms)}
        if offset is not None:
            params["offset"] = str(offset)
        _, headers, body = await self._call(
            "GET",
            _path(url, topic, partition, "records"),
            params=params,
            headers={"Accept": BATCH_MEDIA_TYPE},
            timeout_s=self.timeout_s + wait_ms / 1000,
        )
        try:
            start, hw = int(headers[LOG_START_HEADER]), int(headers[HIGH_WATERMARK_HEADER])
        except (KeyError, ValueError):
            raise errors.MillstreamError(f"{url} answered a copy fetch without offsets") from None
        return SourceChunk(body, start, hw)

    async def fence(self, url: str, topic: str, partition: int, epoch: int, owner: int) -> int:
        _, _, body = await self._call(
            "POST",
            _path(url, topic, partition, "fence"),
            json_body={"epoch": epoch, "owner": owner},
        )
        try:
            return int(json.loads(body)["log_end_offset"])
        except (ValueError, KeyError, TypeError):
            raise errors.MillstreamError(f"{url} answered a fence with {body[:200]!r}") from None

    async def release(self, url: str, topic: str, partition: int) -> None:
        await self._call("DELETE", _path(url, topic, partition))

    async def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        token = self._auth.token()
        if token is None:
            raise errors.Forbidden("this broker has no admin token to reach other brokers with")
        headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        limit = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._open().request(
                method, url, params=params, headers=headers, json=json_body, timeout=limit
            ) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    raise _error(resp.status, body, url)
                return resp.status, dict(resp.headers), body
        except TimeoutError:
            raise errors.RequestTimedOut(f"no answer from {url} in {limit.total:g}s") from None
        except aiohttp.ClientError as exc:
            raise errors.BrokerUnavailable(f"cannot reach {url}: {exc}") from None


def _path(base: str, topic: str, partition: int, *rest: str) -> str:
    parts = [base.rstrip("/"), "v1/admin/partitions", quote(topic, safe=""), str(partition)]
    return "/".join([*parts, *rest])


def _error(status: int, body: bytes, url: str) -> errors.MillstreamError:
    try:
        detail = json.loads(body)["error"]
        return errors.for_code(str(detail["code"]))(f"{url}: {detail['message']}")
    except (ValueError, KeyError, TypeError):
        retriable = status in (502, 503, 504)
        error = errors.BrokerUnavailable if retriable else errors.MillstreamError
        return error(f"{url} answered HTTP {status}")
