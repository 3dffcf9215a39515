#!/usr/bin/env bash
# Set up sharpcam in a virtual environment (./.venv by default) on a Debian/Ubuntu machine.
#   bash scripts/setup.sh                 the runtime only (no torch): run, enhance, bench, serve
#   bash scripts/setup.sh --train         also training (torch CPU build pinned first, then .[train])
#   bash scripts/setup.sh --dev           also training and the test tools, and Debian's chromium
#                                         and xvfb for the browser tests
#   bash scripts/setup.sh --venv DIR ...  another folder than .venv (or VENV=DIR)
# The runtime's ONNX Runtime is onnxruntime-gpu (it runs on the CPU too); this script never
# installs the CPU-only `onnxruntime` beside it (both own the same `onnxruntime` module).
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
venv=${VENV:-.venv}
while [ $# -gt 0 ]; do
    case "$1" in
        --train) [ "$extra" = dev ] || extra=train ;;
        --dev) extra=dev ;;
        --venv)
            [ $# -ge 2 ] || { echo "setup.sh: --venv needs a folder" >&2; exit 2; }
            venv=$2
            shift
            ;;
        -h | --help) sed -n '2,9p' "$0" | cut -c3-; exit 0 ;;
        *) echo "setup.sh: unknown option $1 (use --train, --dev, --venv DIR)" >&2; exit 2 ;;
    esac
    shift
done

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if [ "$extra" = dev ] && { ! command -v chromium >/dev/null || ! command -v Xvfb >/dev/null; }; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends chromium fonts-liberation xvfb xauth
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
if [ -n "$extra" ]; then
    # torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. On a CUDA machine,
    # install the CUDA build of your choice before running this script; it is kept.
    "$venv/bin/python" -c "import torch" 2>/dev/null || $pip install -q torch==2.13.0
    $pip install -q -e ".[$extra]"
else
    $pip install -q -e .
fi
if $pip show -q onnxruntime 2>/dev/null && $pip show -q onnxruntime-gpu 2>/dev/null; then
    echo "setup.sh: both onnxruntime and onnxruntime-gpu are in $venv; they clash:" \
        "\`$pip uninstall -y onnxruntime onnxruntime-gpu\`, then run this again" >&2
    exit 1
fi
echo "sharpcam $("$venv/bin/python" -c 'import sharpcam; print(sharpcam.__version__)')" \
    "is set up in $venv (${extra:-runtime}); run it with $venv/bin/sharpcam"
