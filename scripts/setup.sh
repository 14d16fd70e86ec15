#!/usr/bin/env bash
# Create .venv/ at the repo root with the backend and everything the tests need.
#
# CPU by default: torch==2.13.0 is the CPU build (it lies on this machine's disk).
# GPU users: set DREAMTIME_TORCH to a CUDA build before running, e.g.
#   DREAMTIME_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${DREAMTIME_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >&2
# torch first and pinned, so nothing below can pull the multi-GB CUDA build.
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_SPEC >&2
.venv/bin/python -m pip install --quiet -e ".[dev]" >&2
# Blender as a module for the add-on's headless tests (tests/addon); cp311 wheels only, ~820 MB.
if [ "${DREAMTIME_SKIP_BPY:-0}" != 1 ] && .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  .venv/bin/python -m pip install --quiet "bpy==5.0.1" >&2
else
  echo "bpy skipped (needs Python 3.11): tests/addon will be skipped" >&2
fi
echo "DreamTime backend ready: $(pwd)/.venv" >&2
