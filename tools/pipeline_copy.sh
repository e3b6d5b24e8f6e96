#!/usr/bin/env bash
# Run the whole DVC pipeline of one profile from scratch in a copy of this repository:
#   tools/pipeline_copy.sh DIR PROFILE [OVERLAY.yaml]
# DIR receives the files git tracks or would track, less the outputs (results/, dvc.lock, dvc-store/; but the machine's
# reference-step log results/bench/reference_log.jsonl, which the report stage reads); params.yaml's
# base.profile becomes PROFILE, and OVERLAY (optional) is merged into params.yaml, key by key, before the run (e.g.
# tools/gpu_dry_run.yaml: the gpu profile with its sizes cut, to test it on a CPU). Data: `triqdef data fetch` of the
# profile's data.source (smoke: the committed sample; else the mirror, from this repository's
# data/cifar10-jpeg.tar.gz). Then `dvc repro --no-commit`. Used by tools/test.sh (smoke) and tools/gpu_run.sh (gpu).
# NO_REPRO=1 stops after making the copy.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: tools/pipeline_copy.sh DIR PROFILE [OVERLAY.yaml]" >&2; exit 2; }
copy=$1 profile=$2 overlay=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ -z $overlay || -f $overlay ]] || { echo "tools/pipeline_copy.sh: error: overlay $overlay not found: expected a YAML file of params" >&2; exit 2; }
[[ -z $overlay ]] || overlay=$(cd "$(dirname "$overlay")" && pwd)/$(basename "$overlay")
mkdir -p "$copy"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do
      [[ -e $repo/$f && ($f != results/* || $f == results/bench/reference_log.jsonl) && $f != dvc.lock \
         && $f != dvc-store/* ]] && printf '%s\0' "$f"
    done \
  | tar -C "$repo" --null -T - -cf - | tar -xf - -C "$copy"
cd "$copy"
# the copy's own code and outputs: nothing of the real repository's results/ is read or written
unset TRIQDEF_OUTPUT TRIQDEF_PROFILE TRIQDEF_DATA_DIR
export PYTHONPATH="$copy/lib${PYTHONPATH:+:$PYTHONPATH}"
python tools/set_profile.py "$profile" ${overlay:+"$overlay"}
printf '[core]\n    no_scm = true\n' > .dvc/config.local   # the copy is no git repository
[[ -z ${NO_REPRO:-} ]] || exit 0   # NO_REPRO=1: the copy only (tools/gpu_prepare.sh)
# data.source mirror (every profile but smoke): the repository's DVC-pulled archive, unless CIFAR10_ARCHIVE names one
[[ -n ${CIFAR10_ARCHIVE:-} || ! -f $repo/data/cifar10-jpeg.tar.gz ]] || export CIFAR10_ARCHIVE=$repo/data/cifar10-jpeg.tar.gz
triqdef --quiet data fetch > /dev/null
dvc repro --no-commit --quiet
