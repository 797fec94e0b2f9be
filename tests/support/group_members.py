"""Consumer-group members as real processes (``examples/group_consumer.py``), and the checks
the tests make of what they were given: every acknowledged record consumed, and none given to
two members of one generation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Member:
    """One group_consumer.py process; its stdout (a JSON line per record) goes to a file."""

    def __init__(
        self,
        url: str,
        assignor: str,
        workdir: Path,
        name: str,
        group: str = "chaos",
        topic: str = "chaos",
        session_timeout_ms: int = 2000,
    ) -> None:
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        command = [
            *(sys.executable, str(ROOT / "examples" / "group_consumer.py")),
            *("--url", url, "--group", group, "--topic", topic, "--client-id", name),
            *("--assignor", assignor, "--session-timeout-ms", str(session_timeout_ms)),
            *("--heartbeat-interval-ms", "300", "--auto-commit-interval-ms", "300"),
        ]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)

    def stop(self, sig: int) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def deliveries(self) -> Iterator[dict[str, object]]:
        for line in self.out.read_text().splitlines():
            if line.endswith("}"):  # a kill -9 may cut the last line short
                yield json.loads(line)


def wait_until_all_consumed(
    members: list[Member], acked: dict[tuple[int, int], str], deadline: float
) -> dict[tuple[int, int], object]:
    while True:
        seen = {
            (int(d["partition"]), int(d["offset"])): d["value"]  # type: ignore[call-overload]
            for m in members
            for d in m.deliveries()
        }
        if set(acked) <= set(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def assert_one_member_per_generation(members: list[Member]) -> None:
    owners: dict[tuple[object, object, object], object] = {}
    for member in members:
        for d in member.deliveries():
            key = (d["generation"], d["partition"], d["offset"])
            owner = owners.setdefault(key, d["member"])
            assert owner == d["member"], f"{key} went to {owner} and {d['member']}"
    assert owners, "no deliveries at all"
