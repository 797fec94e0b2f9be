"""Asking other brokers of the cluster about partitions they serve, over their public HTTP API.

Used by the group routes (``broker/http/groups.py``): a group's coordinator shows lag for
every partition the group committed, and resets its offsets to the earliest, the latest or a
time, but the log end of a partition served elsewhere is only known to its broker. Lookups
run side by side and are bounded by a short timeout: a broker that does not answer in time
gives no offset (``None``), and lag shows null rather than holding the description up.

The groups package knows nothing of HTTP; this module is the HTTP layer's, with one pooled
aiohttp client session created on first use and closed with the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from urllib.parse import quote

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

OffsetQuery = tuple[str, str, int]  # broker URL, topic, partition


class Peers:
    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def close(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def offset(self, url: str, topic: str, partition: int, at: str) -> int | None:
        """The partition's offset ``at`` (earliest, latest or a time in ms) as its broker at
        ``url`` says; None if it does not answer in time or refuses."""
        path = f"/v1/topics/{quote(topic, safe='')}/partitions/{partition}/offsets"
        try:
            async with self._open().get(url.rstrip("/") + path, params={"at": at}) as resp:
                if resp.status != 200:
                    logger.info(
                        "broker %s answered %d for %s/%d", url, resp.status, topic, partition
                    )
                    return None
                answer = await resp.json()
                return int(answer["offset"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            logger.info("no offset of %s/%d from broker %s: %r", topic, partition, url, exc)
            return None

    async def offsets(self, queries: Iterable[OffsetQuery], at: str) -> list[int | None]:
        return list(await asyncio.gather(*(self.offset(u, t, p, at) for u, t, p in queries)))
