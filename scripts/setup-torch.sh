#!/usr/bin/env bash
# Installs the libtorch that `trainer` builds against: PyPI torch==2.11.0 (the
# CUDA 13.0 build, as on our GPU machines) into .venv without its ~3.5 GB of
# CUDA wheels, plus the two small CUDA 13.0 wheels libtorch_cpu.so needs to
# load (cudart, cupti): about 1.3 GB. .cargo/config.toml points LIBTORCH here.
# Idempotent: a second run checks the versions and does nothing.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv
TORCH=2.11.0
# The versions torch 2.11.0's cuda-toolkit==13.0.2 pin selects.
CUDART=13.0.96
CUPTI=13.0.85

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null; then
    echo "setup-torch: $PYTHON not found (the torch path in .cargo/config.toml assumes Python 3.11)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

have() { # have NAME VERSION: is exactly that distribution installed?
    [ "$("$VENV/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]
}

want=()
have torch "$TORCH" || want+=("torch==$TORCH")
have nvidia-cuda-runtime "$CUDART" || want+=("nvidia-cuda-runtime==$CUDART")
have nvidia-cuda-cupti "$CUPTI" || want+=("nvidia-cuda-cupti==$CUPTI")

if [ ${#want[@]} -gt 0 ]; then
    # --no-deps: torch's own dependencies (the full CUDA stack, sympy, ...) are
    # not needed to link and run libtorch from Rust.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${want[@]}"
fi

lib="$VENV/lib/python3.11/site-packages/torch/lib"
if [ ! -f "$lib/libtorch_cpu.so" ]; then
    echo "setup-torch: $lib/libtorch_cpu.so missing after install" >&2
    exit 1
fi
echo "setup-torch: libtorch $TORCH ready in $lib"
