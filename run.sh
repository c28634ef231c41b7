#!/usr/bin/env bash
# jaxsparse's two entry points; each sets up .venv on first use.
#   bash run.sh main [runner flags]   # default pruning experiment on digits
#   bash run.sh test [pytest flags]   # the whole test suite
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.jaxsparse-installed"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[run.sh] creating $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  local want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    echo "[run.sh] installing jaxsparse and its dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e ".[data,notebooks,dev]" >&2
    echo "$want" > "$STAMP"
  fi
}

cmd="${1:-}"; shift || true
case "$cmd" in
  main)
    setup
    exec "$VENV/bin/python" -m jaxsparse.experiments.main --config configs/default.py \
      --workdir "${WORKDIR:-runs/default}" "$@" ;;
  test)
    setup
    "$VENV/bin/ruff" check --quiet . || { echo "ruff found style errors" >&2; exit 1; }
    exec "$VENV/bin/python" -m pytest -n 2 -q tests "$@" ;;
  *)
    echo "usage: bash run.sh {main|test} [args...]" >&2; exit 2 ;;
esac
