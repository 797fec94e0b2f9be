"""What the handlers share while the operator runs: settings, the API connection, the clock,
and one lock per Cluster.

Created by :func:`millstream.operator.handlers.build_registry`, opened by kopf's startup
handler and closed by its cleanup handler; every handler takes it as its first argument.

The lock: a Cluster's handler, its drift check, and the handlers of its Topics all read the
brokers, decide, and push. Each takes the Cluster's lock for that, so that a drift check never
pushes a placement that a Topic's handler is replacing, and two pushes for one cluster never
interleave. Everything runs on kopf's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime

from millstream.operator.kube import Kube
from millstream.operator.resources import ADMIN_TOKEN_KEY, PdbApiVersion, names, pdb_api_version
from millstream.operator.settings import OperatorSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    def __init__(
        self, settings: OperatorSettings, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.settings = settings
        self.now = clock
        self._kube: Kube | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pdb: PdbApiVersion | None = None

    async def open(self, kubeconfig: str | None = None) -> None:
        self._kube = await Kube.connect(kubeconfig)

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()
            self._kube = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            raise RuntimeError("the operator's runtime is not open")
        return self._kube

    def lock(self, namespace: str, cluster: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, cluster), asyncio.Lock())

    async def pdb_api_version(self) -> PdbApiVersion:
        """policy/v1 where served (found once: an API server does not change while we run)."""
        if self._pdb is None:
            self._pdb = pdb_api_version(await self.kube.served_versions("policy"))
        return self._pdb

    async def admin_token(self, namespace: str, cluster: str) -> str | None:
        """The token in the Cluster's admin Secret; None if there is no usable one."""
        secret = await self.kube.read_secret(namespace, names(cluster).admin_secret)
        encoded = ((secret or {}).get("data") or {}).get(ADMIN_TOKEN_KEY)
        if not encoded:
            return None
        try:
            token = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return token or None
