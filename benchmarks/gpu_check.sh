#!/usr/bin/env bash
# The GPU check, one command on a machine with one CUDA GPU:
#
#     bash benchmarks/gpu_check.sh            # from the repository root or anywhere
#
# 1. Uses $GPU_PYTHON if it already imports a CUDA torch; otherwise makes .venv-gpu and installs
#    the pinned CUDA build of torch (the PyPI Linux wheel of torch==2.13.0 is the CUDA one) and
#    glotta with the bench extra, under constraints.txt. Offline machines: point pip at wheels
#    with PIP_FIND_LINKS=/path/to/wheels PIP_NO_INDEX=1.
# 2. Runs python -m benchmarks.gpu_check (GPT-2 small, block 1024, bf16: glotta's loop vs
#    Trainer's best flags, tokens/s and MFU; batch-1 generation tokens/s) under an 8-minute
#    limit; it writes benchmarks/results/gpu_check-*.json and prints one JSON line last.
# Extra arguments go to benchmarks.gpu_check (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found; this check needs a machine with a CUDA GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2

has_cuda_torch() {
    "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

PY="${GPU_PYTHON:-}"
if [[ -z "$PY" ]] || ! has_cuda_torch "$PY"; then
    VENV="${GPU_VENV:-.venv-gpu}"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    PY="$VENV/bin/python"
    if ! has_cuda_torch "$PY"; then
        "$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    fi
    PIP_CONSTRAINT=build-constraints.txt "$PY" -m pip install --quiet \
        --disable-pip-version-check -c constraints.txt -e ".[bench]"
fi
if ! has_cuda_torch "$PY"; then
    echo "gpu_check: $PY has no CUDA-enabled torch (torch.cuda.is_available() is False)" >&2
    exit 2
fi

exec timeout 480 "$PY" -m benchmarks.gpu_check "$@"
