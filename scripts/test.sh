#!/usr/bin/env bash
# Install wsi-her2 with every extra into a virtual environment kept outside the checkout
# (reused while pyproject.toml and the Python version are unchanged), then run the checks
# and the whole test suite. Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$( (cat pyproject.toml; echo "$pyver") | sha256sum | cut -c1-16)
VENV=${WSI_HER2_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/wsi-her2/venv-$key}

if [ ! -f "$VENV/.complete" ]; then
  echo "== creating $VENV (first run for these dependencies: a few minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$VENV/bin/python" -m pip install -q ".[all,test]"
  touch "$VENV/.complete"
fi
# The package itself is reinstalled every run (seconds): the environment never tests stale code.
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation --force-reinstall .

# The viewer's browser tests drive Debian's Chromium; CI installs it, elsewhere they skip.
if [ "${CI:-}" = "true" ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "!! could not install chromium: the browser tests will skip"
fi

export PATH="$VENV/bin:$PATH"
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
python -m pytest -q "$@"
