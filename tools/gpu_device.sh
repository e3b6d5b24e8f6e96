#!/usr/bin/env bash
# The pipeline of one profile on the GPU machine (the `device` tool), which has PyTorch but no DVC, no papermill and
# no network: every stage from scratch, independent stages side by side on the one GPU (tools/dag_run.py), results
# and logs to $OUT as tarballs. Prepare what it needs here first, then carry .whl and .gpu:
#   bash tools/gpu_prepare.sh gpu smoke            # .whl/ (wheels), .gpu/plan-PROFILE.json, .gpu/cifar10-jpeg.tar.gz
#   bash tools/gpu_device.sh PROFILE [--jobs N] [--deadline S] [--overlay F.yaml] [--bench] [--calibrate]
#     --jobs      stages at a time (default 8)          --deadline  seconds, then stop and collect (default 480)
#     --overlay   params merged into params.yaml        --bench     also `triqdef bench train-step` on the GPU
#     --calibrate afterwards, the gpu profile's FP and QAT trainings shortened (tools/gpu_calibrate.yaml), timed
# It runs in the working copy it is given (results/ and dvc.lock are removed there first): never in your checkout.
# Unpack here: tar xzf results.tar.gz (results/…), tar xzf logs.tar.gz (stage logs, dag_run.json).
set -uo pipefail
[[ ${1:-} =~ ^(smoke|cpu|gpu|paper)$ ]] || { echo "gpu_device.sh: error: profile '${1:-}': expected smoke, cpu, gpu or paper" >&2; exit 2; }
profile=$1; shift
jobs=8 deadline=480 overlay="" bench=0 calibrate=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --overlay) overlay=$2; shift 2 ;;
    --bench) bench=1; shift ;;
    --calibrate) calibrate=1; shift ;;
    *) echo "gpu_device.sh: error: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $jobs =~ ^[1-9][0-9]*$ && $deadline =~ ^[0-9]+$ ]] \
  || { echo "gpu_device.sh: error: --jobs $jobs / --deadline $deadline: expected a positive integer / whole seconds" >&2; exit 2; }
[[ -f .gpu/plan-$profile.json && -f .gpu/cifar10-jpeg.tar.gz ]] \
  || { echo "gpu_device.sh: error: .gpu/plan-$profile.json or .gpu/cifar10-jpeg.tar.gz missing: run tools/gpu_prepare.sh $profile and carry .gpu" >&2; exit 2; }
[[ -n ${OUT:-} && -d $OUT ]] || { echo "gpu_device.sh: error: OUT not set: run it on the device machine (which sets OUT), or in a throwaway copy with OUT=DIR: it removes results/ and dvc.lock where it runs" >&2; exit 2; }
exec > >(tee -a "$OUT/console.log") 2>&1
t0=$(date +%s)
if ! python3 -c "import papermill, art, ipykernel" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_device.sh: error: installing .whl/*.whl failed: carry .whl (tools/gpu_prepare.sh)"; exit 3; }
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
mkdir -p /tmp/bin
command -v python > /dev/null || ln -sf "$(command -v python3)" /tmp/bin/python
printf '#!/bin/sh\nexec python3 -m triqdef "$@"\n' > /tmp/bin/triqdef && chmod +x /tmp/bin/triqdef
export PATH=/tmp/bin:$PATH PYTHONPATH=$PWD/lib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
unset TRIQDEF_OUTPUT TRIQDEF_PROFILE TRIQDEF_DATA_DIR
# CPU threads per stage: the cores shared out among the stages that run side by side. With PyTorch's default (every
# core in every process) the dry run's 12 stages ran 5-10x slower than alone (2026-11-30, README "GPU profile").
threads=$(( $(nproc --all) / jobs )); (( threads >= 1 )) || threads=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$threads}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc --all
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  git rev-parse HEAD 2>/dev/null || true; } | tee "$OUT/env.txt"
rm -rf results dvc.lock && mkdir -p results/dag_run
cp params.yaml /tmp/params.orig.yaml
python3 tools/set_profile.py "$profile" ${overlay:+"$overlay"} || exit 2
CIFAR10_ARCHIVE=$PWD/.gpu/cifar10-jpeg.tar.gz TRIQDEF_OFFLINE=1 triqdef --quiet data fetch > /dev/null \
  || { echo "gpu_device.sh: error: data fetch failed"; exit 3; }
echo "== setup $(( $(date +%s) - t0 )) s; stages: $jobs at a time, $OMP_NUM_THREADS CPU threads each, deadline $deadline s"
python3 tools/dag_run.py run ".gpu/plan-$profile.json" --jobs "$jobs" --deadline "$deadline" --log results/dag_run
rc=$?
if [[ $bench == 1 ]]; then
  for args in "" "--gpdp-every 1 --downsample 1"; do
    timeout 120 triqdef bench train-step --bits 32 8 5 4 2 --batch-size 128 --steps 20 --warmup 3 $args \
      2>&1 | tail -25 | tee -a results/dag_run/bench.txt
  done
fi
if [[ $calibrate == 1 ]]; then   # in its own output folder, so that the run's results stay as they are
  cp params.yaml /tmp/params.run.yaml && cp /tmp/params.orig.yaml params.yaml
  python3 tools/set_profile.py gpu tools/gpu_calibrate.yaml
  for stage in "data prepare" "train fp" "train qat"; do
    s=$(date +%s)
    TRIQDEF_OUTPUT=/tmp/calibrate TRIQDEF_DATA_DIR=$PWD/data/cifar10 timeout 150 triqdef $stage > "results/dag_run/calibrate-${stage/ /_}.log" 2>&1
    crc=$?
    echo "calibrate: triqdef $stage: rc $crc in $(( $(date +%s) - s )) s" | tee -a results/dag_run/calibrate.txt
  done
  cp /tmp/params.run.yaml params.yaml
fi
echo "== total $(( $(date +%s) - t0 )) s, dag_run rc $rc"
cp results/dag_run/dag_run.json "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tar.gz" results/dag_run
tar czf "$OUT/results.tar.gz" --exclude=results/models --exclude='results/cross_arch/*.pt' --exclude=results/dag_run \
  --exclude='*.ckpt' results
tar czf "$OUT/models.tar.gz" results/models results/patches 2>/dev/null
ls -la "$OUT"
exit $rc
