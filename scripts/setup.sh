#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtual environment with the CPU torch wheel installed
# *first* (and pinned by constraints.txt for every later install, so pip never pulls CUDA wheels),
# the package with its test extras and Ray (the study executors' tests start a Ray cluster), and
# Fashion-MNIST from Debian's dataset-fashion-mnist package.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c constraints.txt -e ".[test,transformer,ray]"

# Fashion-MNIST: Debian ships the real IDX files; extract the .deb without installing it (no root needed).
data_dir=${DEEPGEOM_DATA_DIR:-$HOME/.cache/deepgeom}
fm="$data_dir/fashion-mnist"
if [[ ! -f "$fm/train-images-idx3-ubyte.gz" ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download dataset-fashion-mnist >/dev/null 2>&1 \
      || { [[ $(id -u) == 0 ]] && apt-get update -qq >/dev/null 2>&1 && apt-get download dataset-fashion-mnist >/dev/null 2>&1; }; }) \
    || echo "warning: could not download Debian's dataset-fashion-mnist; fashion-mnist will be unavailable" >&2
  if compgen -G "$tmp/*.deb" >/dev/null; then
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mkdir -p "$fm"
    cp "$tmp"/x/usr/share/datasets/fashion-mnist/*.gz "$fm/"
  fi
  rm -rf "$tmp"
fi
touch "$VENV/.deepgeom-installed"
