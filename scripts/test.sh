#!/usr/bin/env bash
# Set up a virtual environment with the test tools, lint, type-check and run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k records -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff"
.venv/bin/ruff check millstream broker operator tests bench
.venv/bin/ruff format --check millstream broker operator tests bench

echo "== mypy"
# mypy cannot follow setuptools' package-dir mapping, so it reads a symlinked view of it.
view=$(mktemp -d)
trap 'rm -rf "$view"' EXIT
mkdir "$view/millstream"
for entry in millstream/*; do ln -s "$PWD/$entry" "$view/$entry"; done
ln -s "$PWD/broker" "$view/millstream/broker"
ln -s "$PWD/operator" "$view/millstream/operator"
(cd "$view" && "$OLDPWD/.venv/bin/mypy" --config-file "$OLDPWD/pyproject.toml" -p millstream)

echo "== import-linter (layers)"
(cd "$view" && PYTHONPATH="$view" "$OLDPWD/.venv/bin/lint-imports" "$OLDPWD/.importlinter")

echo "== kube control plane (builds once, minutes; cached after)"
bash scripts/kube-apiserver.sh

echo "== helm and kubectl (fetched once, cached after)"
# tests/k8s runs helm from there, and fails (does not skip) without it.
MILLSTREAM_TOOLS_DIR=$(bash scripts/k8s-tools.sh)
export MILLSTREAM_TOOLS_DIR

echo "== shellcheck (Debian's, installed once; tests/k8s/test_kind.py runs it)"
if ! command -v shellcheck >/dev/null; then
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get install --yes --quiet shellcheck
fi

echo "== pytest"
.venv/bin/pytest "$@"
