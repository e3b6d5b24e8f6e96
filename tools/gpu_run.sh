#!/usr/bin/env bash
# The `gpu` profile: the whole pipeline from scratch in a temporary copy (tools/pipeline_copy.sh), then its tables,
# figures, metrics, metadata, curves, executed notebooks and REPORT.md copied to results/gpu/ (checkpoints and patch
# files stay in the copy). Sized for ~9 min on one datacentre GPU (params.yaml, profile gpu; README "GPU profile").
#   tools/gpu_run.sh [--dry-run] [--keep DIR]
#     --dry-run   the gpu profile with its sizes cut to smoke scale (tools/gpu_dry_run.yaml), on any machine: proves
#                 that the profile runs; results go to results/gpu-dry-run/ (not committed)
#     --keep DIR  run in DIR and keep it (default: a temporary folder, removed after a successful run)
# Data: `triqdef data fetch` of data.source (mirror: `dvc pull data.dvc` first, or CIFAR10_ARCHIVE=path/to/it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
overlay="" dest=results/gpu dir=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) overlay=tools/gpu_dry_run.yaml dest=results/gpu-dry-run; shift ;;
    --keep) dir=${2:?--keep needs a folder}; shift 2 ;;
    *) echo "tools/gpu_run.sh: error: unknown argument $1: expected --dry-run or --keep DIR" >&2; exit 2 ;;
  esac
done
copy=${dir:-$(mktemp -d -t triqdef-gpu-XXXXXX)}
start=$(date +%s)
echo "== gpu profile${overlay:+ (dry run: $overlay)}: dvc repro in $copy"
bash tools/pipeline_copy.sh "$copy" gpu $overlay
mkdir -p "$dest"
for sub in tables figures metrics metadata plots notebooks attack_strength REPORT.md; do
  [[ -e $copy/results/$sub ]] && cp -r "$copy/results/$sub" "$dest/"
done
python - "$dest" "$(( $(date +%s) - start ))" "$(git rev-parse HEAD)" "${overlay:-none}" <<'PY'
import json, platform, sys
import torch
dest, seconds, commit, overlay = sys.argv[1:]
info = {"commit": commit, "wall_time_s": int(seconds), "overlay": overlay, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
open(f"{dest}/RUN.json", "w").write(json.dumps(info, indent=2) + "\n")
print(f"gpu profile: {seconds} s on {info['device']}; results in {dest}/")
PY
[[ -n $dir ]] || rm -rf "$copy"
