"""The admin token: who may push cluster metadata to this broker.

Created by the server from ``--admin-token-file`` and checked by every route under
``/v1/admin/`` (``broker/http/admin.py``, ``moves.py``, ``replicas.py``) before it reads its
body; also sent by this broker when it calls another's admin routes to move a partition (the
brokers of a cluster share the token). The operator generates the
token and keeps it in a Secret mounted into the broker pods; a request must carry it as
``Authorization: Bearer <token>``. Without the header the answer is 401 ``unauthorized``, with
another token 403 ``forbidden`` (compared in constant time), and a broker started without a
token file refuses every admin request that carries credentials with 403 (and one without
with 401, as HTTP has it): nothing in the cluster can rewrite its metadata then.

The file is read at start (a missing or empty file stops the broker from starting) and read
again when it changes, so a rotated Secret takes effect without a restart.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from aiohttp import web

from millstream import errors

logger = logging.getLogger(__name__)


class AdminAuth:
    def __init__(self, token_file: Path | None) -> None:
        self.token_file = token_file
        self._token: bytes | None = None
        self._seen: tuple[int, int, int] | None = None  # inode, size, mtime of the read file
        if token_file is not None:
            self._token = self._read(token_file)

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            token = path.read_bytes().strip()
        except OSError as exc:
            raise errors.InvalidRequest(f"cannot read the admin token file {path}: {exc}") from exc
        if not token:
            raise errors.InvalidRequest(f"the admin token file {path} is empty")
        return token

    def _current(self) -> bytes | None:
        path = self.token_file
        if path is None:
            return None
        try:
            st = os.stat(path)
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            if seen != self._seen:
                self._token, self._seen = self._read(path), seen
        except (OSError, errors.InvalidRequest) as exc:
            # Mid-rotation, or removed: keep the token last read rather than lock the operator out.
            logger.warning("admin token file %s unreadable, keeping the last token: %s", path, exc)
        return self._token

    def token(self) -> str | None:
        """The token, for this broker's own calls to other brokers' admin routes (a move's
        receiver fences and reads its source); None if admin routes are closed."""
        token = self._current()
        return None if token is None else token.decode()

    def check(self, request: web.Request) -> None:
        """Raise Unauthorized or Forbidden unless the request carries the admin token."""
        header = request.headers.get("Authorization", "")
        if not header:  # 401 whatever the broker's token: credentials are missing
            raise errors.Unauthorized("admin routes need an 'Authorization: Bearer <token>' header")
        token = self._current()
        if token is None:
            raise errors.Forbidden(
                "admin routes are disabled: this broker was started without --admin-token-file"
            )
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise errors.Forbidden("the admin token is wrong")
