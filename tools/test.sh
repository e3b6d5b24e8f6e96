#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run):
#   1. unit tests (tests/, among them the check that dvc.yaml lists every stage's code and params: tools/dvc_deps.py);
#   2. `dvc repro` of the whole dvc.yaml in the smoke profile, in a temporary copy of the repository
#      (the files git tracks or would track, without results/ and dvc.lock), data from `triqdef data fetch` offline;
#      the replica group's matrices cut to one entry of each kind (tools/ci_smoke.yaml: CI time);
#   3. nbval on every source notebook, in the smoke profile, on that copy's outputs;
#   4. REPORT's store-based verdicts rebuilt from that copy's outcome stores alone (tools/report_from_stores.py);
#   5. a fresh clone of the committed repository: `dvc pull` from dvc-store/ leaves no output of an up-to-date
#      stage missing (a forgotten `dvc push`), stale stages listed (tools/dvc_store.py --status).
# Options: --no-unit skips step 1. Environment: TRIQDEF_TEST_WORKERS=N runs steps 1 and 3 in N pytest-xdist workers
# (default auto: one per core); TRIQDEF_SMOKE_COPY=DIR makes the copy in DIR instead of a fresh
# temporary folder. The smoke profile reads the committed sample (data.source: sample).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export TQDM_DISABLE=1 MPLBACKEND=Agg
# dvc runs the stages' `triqdef` / `papermill` commands: they must be the ones beside this interpreter
PATH="$(python -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH
for tool in triqdef dvc papermill; do
  command -v "$tool" > /dev/null || { echo "tools/test.sh: $tool not found beside $(command -v python): run 'make test' or activate .venv" >&2; exit 2; }
done
start=$(date +%s)

# pytest-xdist: one worker per core, each on one thread (small tensors: two 1-thread processes do more than one
# 2-thread process; measured 183 -> 151 s for the unit tests, 191 -> 145 s for nbval, on 2 cores)
workers=${TRIQDEF_TEST_WORKERS:-auto}
[[ ${1:-} == --no-unit ]] || OMP_NUM_THREADS=1 python -m pytest -q -n "$workers" --durations=15 tests   # the 15 slowest: CI time
t_unit=$(date +%s)

copy="${TRIQDEF_SMOKE_COPY:-$(mktemp -d -t triqdef-smoke-XXXXXX)}"
echo "== smoke pipeline: dvc repro in $copy"
# tools/ci_smoke.yaml: the replica matrices cut to one entry of each kind (CI time; the core is as committed)
TRIQDEF_OFFLINE=1 bash tools/pipeline_copy.sh "$copy" smoke tools/ci_smoke.yaml
t_repro=$(date +%s)

echo "== nbval (smoke profile) on $copy/results"
(
  cd "$copy"
  export PYTHONPATH="$copy/lib${PYTHONPATH:+:$PYTHONPATH}" TRIQDEF_OFFLINE=1 TRIQDEF_PROFILE=smoke TRIQDEF_OUTPUT="$copy"
  OMP_NUM_THREADS=1 python -m pytest -q -n "$workers" --dist loadscope --nbval-lax --nbval-current-env \
    -p no:cacheprovider notebooks/   # loadscope: each notebook's cells in order, in one kernel
)

echo "== REPORT's store-based verdicts from the outcome stores alone (every table deleted)"
python tools/report_from_stores.py "$copy/results"

echo "== fresh clone: dvc pull from dvc-store/, then dvc status (tools/dvc_store.py --status)"
clone=$(mktemp -d -t triqdef-clone-XXXXXX)
git clone -q "$repo" "$clone"
(cd "$clone" && dvc pull --allow-missing --quiet && python tools/dvc_store.py --status)
rm -rf "$clone"
end=$(date +%s)
[[ -n ${TRIQDEF_SMOKE_COPY:-} ]] || rm -rf "$copy"   # kept on failure (set -e stops before this line)
echo "make test: done in $(( end - start )) s (unit tests $(( t_unit - start )) s, dvc repro $(( t_repro - t_unit )) s, nbval $(( end - t_repro )) s)"
