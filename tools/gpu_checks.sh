#!/usr/bin/env bash
# Issue 31's checks on a GPU machine (the `device` tool), as one prepared call; everything lands in $OUT:
#   tests.txt             the CUDA tests (tests/test_graphed.py: captured steps and the captured loop against eager;
#                         tests/test_stacked.py, tests/test_train.py -k stack; the machine's image has pytest)
#   reference_log.jsonl   `triqdef bench reference` on the GPU (the machine's unit of time)
#   steps.json            tools/gpu_steps.py: the loop's own step per mode (FP and joint QAT captured; TriQDef eager
#                         and captured), marginal ms per step, and the paper profile's joint-QAT minutes from them
#   triqdef_step.json     `triqdef --profile gpu bench train-step`: the TriQDef step against the QAT step
#   syncs.json            tools/gpu_syncs.py: host syncs per training step, counted by CUDA
#   env.txt, console.log
# Run from the repository root of the copy the device tool makes:  bash tools/gpu_checks.sh
set -uo pipefail
[[ -n ${OUT:-} && -d $OUT ]] || { echo "gpu_checks.sh: error: OUT not set: run it through the device tool" >&2; exit 2; }
exec > >(tee -a "$OUT/console.log") 2>&1
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg TRIQDEF_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc --all
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; } | tee "$OUT/env.txt"
step() { echo "== $(date -u +%T) $*"; }
step tests
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_graphed.py tests/test_stacked.py tests/test_train.py \
  -k "graph or captured or stack or triqdef" 2>&1 | tail -25 | tee "$OUT/tests.txt"
step reference
timeout 60 python3 -m triqdef --quiet bench reference --device cuda --steps 30 --note "issue 31 GPU checks" \
  --log "$OUT/reference_log.jsonl"
step loop steps
timeout 200 python3 tools/gpu_steps.py --device cuda --short 10 --long 70 \
  --modes fp_captured,qat_stacked_captured,triqdef,triqdef_captured --out "$OUT/steps.json"
step triqdef step
timeout 100 python3 -m triqdef --quiet --profile gpu bench train-step --steps 10 --warmup 3 --out "$OUT/triqdef_step.json"
step host syncs
timeout 100 python3 tools/gpu_syncs.py --out "$OUT/syncs.json"
step done
