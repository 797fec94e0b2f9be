"""The real operator and real brokers for tests against the real API server.

- :class:`KubeRest`: the API server as plain JSON over HTTPS (any object by path, custom
  resources and their status included), for tests that read what the operator wrote.
- :class:`StandInBrokers`: broker processes (``millstream serve --broker-id N
  --admin-token-file F``) standing in for a Cluster's pods, which nothing runs here (no
  kubelet). Their token file plays the mounted admin Secret: :meth:`StandInBrokers.set_token`
  rewrites it as the kubelet would, and the brokers read it again.
- :class:`OperatorProcess`: ``millstream operator --namespace=NS``, the command the Helm chart
  runs, in a subprocess with its own log file, reaching the stand-ins through
  ``MILLSTREAM_BROKER_URLS`` (the operator's test and development override).
- :func:`eventually`: bounded polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from millstream.operator.kube import object_path
from millstream.operator.runtime import Runtime
from millstream.operator.settings import OperatorSettings
from tests.support.broker import BrokerProcess
from tests.support.cluster import start_brokers
from tests.support.kube import KubeControlPlane, free_port

T = TypeVar("T")
Handler = Callable[[Runtime, Mapping[str, Any], logging.Logger], Awaitable[None]]
CUSTOM = "millstream.io/v1alpha1"


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something other than None (or False), at most
    ``timeout`` seconds; the assertion names ``what`` was awaited and what the probe said."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class KubeRest:
    """The API server as JSON: ``get`` answers None for 404, other failures raise."""

    def __init__(self, url: str, token: str, ca_file: Path) -> None:
        self.url = url
        self._token = token
        self._context = ssl.create_default_context(cafile=str(ca_file))

    @classmethod
    def of(cls, plane: KubeControlPlane) -> KubeRest:
        return cls(plane.url, plane.token, plane.ca_file)

    def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=10, context=self._context) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        try:
            return self.call("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def items(self, path: str) -> list[dict[str, Any]]:
        return list(self.call("GET", path)["items"])

    def create(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def merge(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str) -> None:
        try:
            self.call("DELETE", path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    # Custom resources of Millstream

    def custom(self, plural: str, namespace: str, name: str | None = None) -> str:
        return object_path(CUSTOM, plural, namespace, name)

    def apply_custom(
        self, kind: str, plural: str, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"apiVersion": CUSTOM, "kind": kind, "metadata": {"name": name}, "spec": spec}
        created: dict[str, Any] = self.create(self.custom(plural, namespace), body)
        return created

    def status(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.get(self.custom(plural, namespace, name)) or {}
        status: dict[str, Any] = found.get("status") or {}
        return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == kind), None)


class StandInBrokers:
    """``count`` brokers with ids 0 to count-1 in ``root``, sharing one admin token file."""

    def __init__(self, root: Path, count: int) -> None:
        self.root = root
        self.count = count
        self.token_file = root / "admin-token"
        self.brokers: list[BrokerProcess] = []
        self.token = ""

    def start(self) -> StandInBrokers:
        self.root.mkdir(parents=True, exist_ok=True)
        # The broker needs a token to start; the real one comes from the operator's Secret.
        self.token_file.write_text("not-the-operators-token\n")
        self.brokers.extend(start_brokers(self.root, self.count, self.token_file))
        return self

    def stop(self) -> None:
        for broker in self.brokers:
            broker.kill()

    @property
    def urls(self) -> list[str]:
        return [b.url for b in self.brokers]

    def set_token(self, token: str) -> None:
        """Replace the token file at once, as the kubelet swaps a Secret volume's files."""
        fresh = self.token_file.with_suffix(".new")
        fresh.write_text(token + "\n")
        fresh.replace(self.token_file)
        self.token = token

    def get(self, broker: int, path: str, *, admin: bool = False) -> Any:
        """A GET on one broker (with the operator's token if ``admin``); None for a 404."""
        headers = {"Authorization": f"Bearer {self.token}"} if admin else {}
        request = urllib.request.Request(self.urls[broker] + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def admin(self, broker: int, method: str, path: str, body: Any = None) -> int:
        """An admin call with the operator's token, behind the operator's back; the status."""
        request = urllib.request.Request(
            self.urls[broker] + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status
            return status

    def cluster(self, broker: int) -> dict[str, Any]:
        found: dict[str, Any] = self.get(broker, "/v1/cluster")
        return found


class OperatorProcess:
    """``millstream operator`` for one namespace, logging to ``log``."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        broker_urls: Sequence[str],
        log: Path,
        *,
        flags: Sequence[str] = (
            "--drift-interval=1",
            "--group-refresh-interval=2",
            "--group-refresh-min-interval=1",
            "--retry-delay=1",
        ),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.broker_urls = list(broker_urls)
        self.log = log
        self.flags = list(flags)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> OperatorProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            MILLSTREAM_BROKER_URLS=",".join(self.broker_urls),
            MILLSTREAM_BROKER_IMAGE="millstream:test",
        )
        argv = [
            sys.executable,
            "-m",
            "millstream.cli.main",
            "operator",
            f"--namespace={self.namespace}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            "--verbose",
            *self.flags,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the operator did not come up in {timeout:.0f}s:\n{self.tail()}")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The operator stopped (SIGSTOP) for the block, then resumed: nothing it does can
        hide or undo what the block does."""
        assert self.proc is not None and self.proc.poll() is None, "the operator is not running"
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def run_handler(self, handler: Handler, body: Mapping[str, Any]) -> None:
        """One handler (``reconcile_cluster``, ``check_cluster``...) run here, in-process, as
        this operator would run it: same account, same broker URLs, settings as its flags."""

        async def run() -> None:
            runtime = Runtime(OperatorSettings(broker_urls=tuple(self.broker_urls), retry_delay=1))
            await runtime.open(str(self.kubeconfig))
            try:
                await handler(runtime, body, logging.getLogger("millstream.operator.test"))
            finally:
                await runtime.close()

        asyncio.run(run())

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"
