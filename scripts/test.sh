#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run). Two configurations, each in a virtual
# environment kept outside the checkout and reused while its inputs (pyproject.toml, the Python
# version, the configuration) are unchanged:
#   all      pip install ".[all,test]"  every extra (PyTorch, timm, grad-cam, Dask); lint, types, tests
#   default  pip install ".[test]"      what `pip install wsi-her2` gives, plus the test tools: no PyTorch;
#                                       the tests that need the models extra skip, saying so
# Usage: bash scripts/test.sh [pytest arguments]
#        WSI_HER2_CONFIGS=default bash scripts/test.sh    (one configuration only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
CONFIGS=${WSI_HER2_CONFIGS:-all default}
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cache=${XDG_CACHE_HOME:-$HOME/.cache}/wsi-her2

venv_for() {  # venv_for CONFIG EXTRAS -> prints the environment's folder, built if needed
  local config=$1 extras=$2 key venv
  key=$( (cat pyproject.toml; echo "$pyver $config") | sha256sum | cut -c1-16)
  venv=$cache/venv-$config-$key
  if [ "$config" = all ] && [ -n "${WSI_HER2_VENV:-}" ]; then venv=$WSI_HER2_VENV; fi
  if [ ! -f "$venv/.complete" ]; then
    echo "== creating $venv (first run for these dependencies: a few minutes)" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel >&2
    "$venv/bin/python" -m pip install -q ".[$extras]" >&2
    touch "$venv/.complete"
  fi
  # The package itself is reinstalled every run (seconds): the environment never tests stale code.
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --force-reinstall . >&2
  echo "$venv"
}

# The viewer's browser tests drive Debian's Chromium; CI installs it, elsewhere they skip.
if [ "${CI:-}" = "true" ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "!! could not install chromium: the browser tests will skip"
fi

for config in $CONFIGS; do
  case $config in
    all) extras="all,test" ;;
    default) extras="test" ;;
    *) echo "unknown configuration $config (all, default)" >&2; exit 2 ;;
  esac
  venv=$(venv_for "$config" "$extras")
  echo "== configuration $config ($venv)"
  if [ "$config" = default ] && "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "!! the default configuration has PyTorch installed: it would not test the default install" >&2
    exit 1
  fi
  if [ "$config" = all ]; then
    echo "== ruff"
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    echo "== mypy"
    "$venv/bin/mypy"
  fi
  echo "== pytest ($config)"
  PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q "$@"
done
