#!/usr/bin/env bash
# The GPU step benchmark (benchmarks/gpu_step.py) as one prepared command for a lent
# H100/H200: bf16 RoBERTa-large shape, batch 64, length 128; AdaMix step time and MFU
# against the measured bf16 matmul rate (goal >= 45%), and the PyTorch + PEFT LoRA peer.
#
#   bash benchmarks/gpu.sh prepare   # here, once: the two pure-Python wheels the GPU
#                                    # image lacks (ml_collections, clu) into .whl/
#   device run: command "bash benchmarks/gpu.sh", carry [".whl"], timeout_s 540
#   bash benchmarks/gpu.sh --smoke   # tiny shapes on any CPU: checks that it runs
#
# Extra arguments go to gpu_step.py (e.g. --variants=adamix,lora --steps=10). Results:
# $OUT/gpu_step.json and $OUT/gpu_step.md (benchmarks/workdirs/gpu/ without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == prepare ]]; then
  PIP="${PYTHON:-.venv/bin/python} -m pip"
  $PIP download -q --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0 clu==0.0.12
  ls -l .whl
  exit 0
fi

# The GPU image's python3 holds jax (CUDA), torch, transformers, peft, flax, optax, orbax;
# a local .venv (CPU smoke) is used when present.
if [[ -x .venv/bin/python && -z "${OUT:-}" ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
if ! $PY -c 'import ml_collections, clu' 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "ml_collections/clu missing and no .whl/: run 'bash benchmarks/gpu.sh prepare' here and carry .whl" >&2
    exit 1
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
# JAX allocates on demand so that the PyTorch peer, in the same process, finds memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
exec $PY -m benchmarks.gpu_step "$@"
