"""Real broker processes for integration tests: started with the CLI on a free loopback port.

``BrokerProcess`` runs ``millstream serve`` exactly as a user would, reads the listening
address from its first line of output, and can be stopped gracefully, killed with SIGKILL and
restarted on the same data directory and port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_LISTENING = re.compile(r"listening on (http://[\d.]+:(\d+))")


class BrokerProcess:
    def __init__(self, data_dir: Path, port: int = 0, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port
        self.extra_args = extra_args
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 20.0) -> BrokerProcess:
        cmd = [
            sys.executable,
            "-m",
            "millstream.cli.main",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MILLSTREAM_")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                self._drain_output()
                self._wait_ready(deadline)
                return self
        self.kill()
        raise RuntimeError("broker did not start:\n" + "".join(self.output))

    def _drain_output(self) -> None:
        # Keep reading the broker's log so a full pipe never blocks it.
        import threading

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("broker never became ready:\n" + "".join(self.output))

    def stop(self, timeout: float = 15.0) -> int:
        """Graceful stop (SIGTERM); returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """``kill -9``: no flush, no goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> BrokerProcess:
        self.stop() if self.proc else None
        return self.start()

    @property
    def log(self) -> str:
        return "".join(self.output)
