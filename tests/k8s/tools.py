"""helm and kubectl for the static Kubernetes tests, and the chart rendered with helm.

Used by the chart and CRD tests in this folder. The binaries come from scripts/k8s-tools.sh,
which scripts/test.sh runs before pytest, exporting MILLSTREAM_TOOLS_DIR. Without them a test
fails rather than skips, so that CI can never pass by testing nothing.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.crd_schema import REPO

CHART = REPO / "charts" / "millstream"
RELEASE = "events"
NAMESPACE = "streaming"
# The oldest API server the chart supports (Chart.yaml's kubeVersion), so that templates see
# the same server in .Capabilities that the CRDs are written for.
KUBE_VERSION = "1.20.0"


def tools_dir() -> Path:
    """Where scripts/k8s-tools.sh put helm and kubectl (its default unless told otherwise)."""
    configured = os.environ.get("MILLSTREAM_TOOLS_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "millstream" / "tools"


def tool(name: str) -> Path:
    """The path of helm or kubectl; fails the calling test when it is missing."""
    path = tools_dir() / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found at {path}: run scripts/k8s-tools.sh (scripts/test.sh does), or "
            "set MILLSTREAM_TOOLS_DIR to a directory that holds helm and kubectl",
            pytrace=False,
        )
    return path


class Helm:
    """helm, with its config, cache and data directories kept out of the user's home."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self._rendered: dict[str, list[dict[str, Any]]] = {}

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        command = [str(self.binary), *map(str, args)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    def values_file(self, values: dict[str, Any]) -> Path:
        fd, name = tempfile.mkstemp(suffix=".yaml", dir=self.home)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(values, f)
        return Path(name)

    def chart_args(self, values: dict[str, Any]) -> list[str | Path]:
        """Release, chart, namespace and values, as `helm install` and `helm template` take them."""
        return [RELEASE, CHART, "--namespace", NAMESPACE, "--values", self.values_file(values)]

    def template(self, values: dict[str, Any], *flags: str) -> list[dict[str, Any]]:
        """The chart's manifests for ``values``, rendered once per values and flags."""
        key = json.dumps([values, flags], sort_keys=True)
        if key not in self._rendered:
            args = self.chart_args(values)
            done = self.run("template", *args, "--kube-version", KUBE_VERSION, *flags)
            assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
            self._rendered[key] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return self._rendered[key]


@functools.cache
def helm() -> Helm:
    """The one Helm of the session (renderings are cached on it)."""
    home = Path(tempfile.mkdtemp(prefix="millstream-helm-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return Helm(tool("helm"), home)
