#!/usr/bin/env bash
# DADApy pins numpy<2 and jax and breaks pyarrow, so it never enters the project's environment: this makes
# a separate venv (.venv-dadapy) used only by bench/ and by tests/fixtures/make_dadapy_fixtures.py.
set -euo pipefail
cd "$(dirname "$0")/.."
V=${DADAPY_VENV:-.venv-dadapy}
if [[ ! -x "$V/bin/python" ]] || ! "$V/bin/python" -c "import dadapy" 2>/dev/null; then
  python3 -m venv "$V"
  "$V/bin/python" -m pip install -q --disable-pip-version-check dadapy
fi
echo "$V/bin/python"
