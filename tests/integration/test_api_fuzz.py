"""Fuzz a real broker from its own OpenAPI document (schemathesis), briefly and reproducibly.

Every operation gets a few examples in each phase (explicit examples, the coverage phase's
boundary and type-violating values, generated data, stateful sequences that create, use and
delete topics). Every answer is held to the document: no 5xx, a documented status, content
type, headers and body, and schema-invalid input refused with a 4xx. Deterministic (Hypothesis
derandomized), so a failure here reproduces with the command it prints; fuzz longer by hand
with the same hooks (see ``tests/support/api_fuzz.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_fuzz import create_fuzz_topics
from tests.support.broker import BrokerProcess
from tests.support.http import call

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "support" / "api_fuzz.toml"
EXAMPLES_PER_OPERATION = 50
SEED = 20261125


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(Path(tmp_path_factory.mktemp("fuzz")) / "data").start()
    try:
        create_fuzz_topics(proc.url)
        yield proc
    finally:
        proc.kill()


def schemathesis_run(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"),
        f"{url}/v1/openapi.json",
        *("--checks", "all"),
        *("--phases", "examples,coverage,fuzzing,stateful"),
        *("--max-examples", str(EXAMPLES_PER_OPERATION)),
        *("--seed", str(SEED), "--generation-deterministic"),
        *("--workers", "1"),
        *("--request-timeout", "20", "--report-dir", str(tmp_path), "--no-color"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.api_fuzz"}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_every_answer_keeps_to_the_document(broker: BrokerProcess, tmp_path: Path) -> None:
    run = schemathesis_run(broker.url, tmp_path)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    # Not a single request, checked or not, ended in the error middleware's catch-all.
    assert "unexpected error serving" not in broker.log, broker.log[-20_000:]
    assert call("GET", f"{broker.url}/healthz").status == 200
