#!/usr/bin/env bash
# Set up a virtual environment (once) and run one broker on 127.0.0.1:9092 with ./data.
# Extra arguments go to `millstream serve` (see `millstream serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/millstream ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -e .
fi
exec .venv/bin/millstream serve "$@"
