"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
running as local processes on 127.0.0.1, with no cluster, no kubelet and no containers.

``tests/k8s/conftest.py`` starts one per test session (the ``kube`` fixture); operator tests
point kopf and the Kubernetes client at its kubeconfig. The binaries are the ones that
``scripts/kube-apiserver.sh`` builds from Debian's source package and caches (Kubernetes 1.20.2,
Debian's etcd 3.4); ``MILLSTREAM_KUBE_DIR`` names another directory holding the same three.

What is real: the API server with its storage, CRD schema validation and pruning, status
subresources, RBAC, admission and watches; with the controller-manager also garbage collection,
namespace deletion, service-account tokens and the StatefulSet controller. Pods and PVCs are
created but stay Pending, as nothing schedules or binds them.

Everything lives in one temporary directory (etcd's data, certificates, keys, the token file,
the kubeconfig and one log per process); when startup fails, the error carries the tail of
each log.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

KUBE_VERSION = "1.20.2"
DIR_ENV = "MILLSTREAM_KUBE_DIR"
BUILD_SCRIPT = "scripts/kube-apiserver.sh"

# The range Services take their ClusterIPs from; 10.0.0.1 becomes the `kubernetes` Service.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_ADMIN_USER = "millstream-test-admin"


class KubeBinariesMissing(RuntimeError):
    """The control-plane binaries are not where the build script leaves them."""


class KubeStartError(RuntimeError):
    """A control-plane process did not become ready in time; the message has its log tails."""


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    controller_manager: Path
    etcd: Path


def default_binary_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "millstream" / "kube" / KUBE_VERSION


def find_binaries(directory: Path | None = None) -> KubeBinaries:
    """The binaries from ``directory``, else ``$MILLSTREAM_KUBE_DIR``, else the build cache."""
    if directory is None:
        override = os.environ.get(DIR_ENV)
        directory = Path(override) if override else default_binary_dir()
    found = KubeBinaries(
        apiserver=directory / "kube-apiserver",
        controller_manager=directory / "kube-controller-manager",
        etcd=directory / "etcd",
    )
    missing = [p.name for p in vars(found).values() if not os.access(p, os.X_OK)]
    if missing:
        raise KubeBinariesMissing(
            f"{', '.join(missing)} not found in {directory}: run `bash {BUILD_SCRIPT}` once"
            f" (it builds Kubernetes {KUBE_VERSION} from Debian's source package and caches it"
            f" there, several minutes), or point {DIR_ENV} at a directory holding kube-apiserver,"
            " kube-controller-manager and etcd"
        )
    return found


def free_port() -> int:
    # The port is free when we look; another process could take it before ours binds it, which
    # shows up as "address already in use" in that process's log tail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Outside pytest's process group, a child would outlive a pytest killed without teardown
    # and keep its ports and CPU; the kernel kills it instead (PR_SET_PDEATHSIG = 1).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class _Process:
    """One control-plane process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            # A session of its own: a Ctrl-C aimed at pytest should not hit the control plane
            # first and leave the teardown talking to a dead API server.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text[-lines:])

    def stop(self, grace: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class KubeControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, as a context manager.

    After ``start()`` (or on entering ``with``): ``url`` is the API server's HTTPS address,
    ``kubeconfig`` a file for any client (its only user is a ``system:masters`` admin),
    ``token`` that admin's bearer token and ``ca_file`` the certificate that the server's
    serving certificate chains to.
    """

    def __init__(
        self,
        *,
        controller_manager: bool = True,
        binaries: KubeBinaries | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.binaries = binaries or find_binaries()
        self.with_controller_manager = controller_manager
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="millstream-kube-"))
        self.token = secrets.token_hex(24)
        self.url = ""
        self.etcd_url = ""
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "apiserver-certs" / "apiserver.crt"
        # etcd fsyncs every write and this etcd's data is thrown away: on tmpfs those cost
        # nothing, on a disk shared with other jobs they slow every API call.
        shm = Path("/dev/shm")
        fast = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="millstream-etcd-", dir=fast))
        self._processes: list[_Process] = []

    def __enter__(self) -> KubeControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> KubeControlPlane:
        deadline = time.monotonic() + self.startup_timeout
        try:
            self._write_credentials()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._write_kubeconfig()
            if self.with_controller_manager:
                self._start_controller_manager(deadline)
        except BaseException:
            # The work directory stays behind with the full logs; the error has their tails.
            self._stop_processes(grace=5.0)
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            raise
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop in reverse order of start (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        self._stop_processes(grace)
        shutil.rmtree(self._etcd_dir, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_processes(self, grace: float) -> None:
        while self._processes:
            self._processes.pop().stop(grace)

    def logs(self) -> dict[str, Path]:
        return {p.name: p.log for p in self._processes}

    def env(self) -> dict[str, str]:
        """The environment for a subprocess (kopf, kubectl, helm) to use this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # -- startup steps --------------------------------------------------------------------

    def _write_credentials(self) -> None:
        # Static tokens are the shortest way to an admin identity; system:masters bypasses RBAC
        # so tests act as cluster-admin, while RBAC stays on for identities they create.
        (self.workdir / "tokens.csv").write_text(
            f'{self.token},{_ADMIN_USER},{_ADMIN_USER},"system:masters"\n'
        )
        (self.workdir / "tokens.csv").chmod(0o600)
        # 1.20 requires a service-account signing key and issuer; the controller-manager signs
        # the token Secrets that the ServiceAccount admission plugin mounts into pods with it.
        key = self.workdir / "service-account.key"
        openssl = shutil.which("openssl")
        if openssl is None:
            raise KubeStartError("openssl is needed to make a service-account key: install it")
        argv = [openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def _start_etcd(self, deadline: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=millstream-test",
                f"--data-dir={self._etcd_dir / 'data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=millstream-test={peer_url}",
                "--logger=zap",
                "--log-outputs=stderr",
                "--log-level=warn",
            ],
        )
        self._wait_http(etcd, f"{self.etcd_url}/health", deadline, lambda body: b'"true"' in body)

    def _start_apiserver(self, deadline: float) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        key = self.workdir / "service-account.key"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                # 1.20 still opens an unauthenticated port 8080 unless told not to.
                "--insecure-port=0",
                # Generates a CA and a serving certificate for 127.0.0.1 into this directory.
                f"--cert-dir={self.ca_file.parent}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # The `kubernetes` Service's endpoints may not be loopback addresses, and nothing
                # in-cluster needs them: without this the server logs a refusal every 10s.
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                # As kubeadm sets it up: the default admission chain (NamespaceLifecycle,
                # LimitRanger, ServiceAccount, DefaultStorageClass, ResourceQuota, webhooks...)
                # plus NodeRestriction, so objects meet the same checks as in a real cluster.
                "--enable-admission-plugins=NodeRestriction",
                "--v=1",
            ],
        )
        self._wait_https(apiserver, f"{self.url}/readyz", deadline, bearer=self.token)

    def _write_kubeconfig(self) -> None:
        # JSON is YAML, so every kubeconfig reader (kubectl, kopf, the Python client) takes it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "millstream-test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": _ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "millstream-test",
                    "context": {"cluster": "millstream-test", "user": _ADMIN_USER},
                }
            ],
            "current-context": "millstream-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig.chmod(0o600)

    def _start_controller_manager(self, deadline: float) -> None:
        port = free_port()
        manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--port=0",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                # One instance: waiting for a lease only delays the first reconcile.
                "--leader-elect=false",
                f"--service-account-private-key-file={self.workdir / 'service-account.key'}",
                f"--root-ca-file={self.ca_file}",
                "--v=1",
            ],
        )
        self._wait_https(manager, f"https://127.0.0.1:{port}/healthz", deadline, bearer=None)

    # -- helpers --------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        process = _Process(name, argv, self.workdir / f"{name}.log")
        self._processes.append(process)
        return process

    def _wait_https(self, process: _Process, url: str, deadline: float, bearer: str | None) -> None:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if process.name == "kube-apiserver":
            # Verify against the CA the server has just generated, once it exists.
            def context() -> ssl.SSLContext | None:
                if not self.ca_file.exists():
                    return None
                return ssl.create_default_context(cafile=str(self.ca_file))
        else:
            # The controller-manager's self-signed certificate chains to nothing we hold; it is
            # our own child on loopback and only its health is read.
            def context() -> ssl.SSLContext | None:
                return ssl._create_unverified_context()

        self._wait_http(
            process, url, deadline, lambda body: body.strip() == b"ok", context, headers
        )

    def _wait_http(
        self,
        process: _Process,
        url: str,
        deadline: float,
        healthy: Callable[[bytes], bool],
        context: Callable[[], ssl.SSLContext | None] = lambda: None,
        headers: dict[str, str] | None = None,
    ) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = process.exited()
            if code is not None:
                self._fail(f"{process.name} exited with status {code}")
            ctx = context()
            if url.startswith("http://") or ctx is not None:
                request = urllib.request.Request(url, headers=headers or {})
                try:
                    with urllib.request.urlopen(request, timeout=2, context=ctx) as response:
                        body = response.read()
                    if healthy(body):
                        return
                    last = body.decode(errors="replace")[-300:]
                except urllib.error.HTTPError as exc:
                    last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-300:]}"
                except (OSError, ssl.SSLError) as exc:
                    last = str(exc)
            time.sleep(0.2)
        self._fail(f"{process.name} not ready within {self.startup_timeout:.0f}s at {url}: {last}")

    def _fail(self, reason: str) -> NoReturn:
        tails = "\n".join(f"--- {p.name}:\n{p.tail()}" for p in self._processes)
        raise KubeStartError(f"{reason} (full logs in {self.workdir})\n{tails}")
