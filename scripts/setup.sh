#!/usr/bin/env bash
# Set up sharpcam in ./.venv on a fresh Debian/Ubuntu machine.
#   bash scripts/setup.sh          runtime + training (torch CPU build pinned first)
#   bash scripts/setup.sh --dev    also the test tools and Debian's chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if [ "$dev" = 1 ] && { ! command -v chromium >/dev/null || ! command -v Xvfb >/dev/null; }; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends chromium fonts-liberation xvfb xauth
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. On a CUDA machine,
# install the CUDA build of your choice before running this script; it is kept.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
if [ "$dev" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
else
    .venv/bin/python -m pip install -q -e '.[train]'
fi
echo "sharpcam is set up in .venv ($(.venv/bin/python -c 'import sharpcam; print(sharpcam.__version__)'))"
