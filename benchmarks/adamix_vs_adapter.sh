#!/usr/bin/env bash
# AdaMix against the single adapter of its merged size on MRPC (MiniLM-L6, real GLUE files):
# the runs behind the "AdaMix against the adapter" sections of benchmarks/RESULTS.md.
# Resumable: re-running skips finished runs and resumes unfinished ones. Hyperparameters are
# the quality benchmark's (benchmarks/quality_config.py: lr 1e-3, batch 32, weight decay
# 0.01, warm-up 0.06, adapter size 32, 4 experts sharing the up projection, consistency
# weight 1), the same for both methods; length 64, mean pooling.
#   bash benchmarks/adamix_vs_adapter.sh [ROOT]      (default benchmarks/workdirs)
# Then `python -m benchmarks.quality --report_only --root=ROOT/<name> --section=...` renders
# each table into RESULTS.md (with --run_curves: every run's dev curve).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${1:-benchmarks/workdirs}
common=(--tasks=mrpc --max_length=64 --write=false)

# 1. MRPC 3 epochs (the quality benchmark's setting), official expert updates; the adapter
#    again beside it, seed by seed, so that differences paired by seed come early.
for seed in 1 2 3; do
  "$PY" -m benchmarks.quality "${common[@]}" --root="$ROOT/quality_mrpc3_official" \
    --methods=adamix,adapter --seeds=$seed --epochs=3 \
    --set=model.pooling=mean,expert_updates=official
done

# 2. The paper's regime: 20 epochs, gradients clipped at 1.0 as in the official runs; one
#    seed of both methods at a time, so that paired differences come early.
mrpc20() {
  "$PY" -m benchmarks.quality "${common[@]}" --root="$ROOT/quality_mrpc20" \
    --methods=adapter,adamix --seeds="$1" --epochs=20 \
    --set=model.pooling=mean,expert_updates=official,grad_clip_norm=1.0
}
mrpc20 1

# 3. Experts per projection, E = 1 and 2 (E = 4 is run 1), seeds 1-2.
for e in 1 2; do
  "$PY" -m benchmarks.quality "${common[@]}" --root="$ROOT/quality_mrpc3_experts$e" \
    --methods=adamix --seeds=1,2 --epochs=3 \
    --set=model.pooling=mean,expert_updates=official,adapter.num_experts=$e
done

mrpc20 2
mrpc20 3
