#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run):
#   1. unit tests (tests/, among them the check that dvc.yaml lists every stage's code and params: tools/dvc_deps.py),
#      in the background beside steps 2 and 3 (they share no files; on 2 cores the overlap saves minutes), their
#      output printed once they end;
#   2. `dvc repro` of the whole dvc.yaml in the smoke profile, in a temporary copy of the repository
#      (the files git tracks or would track, without results/ and dvc.lock), data from `triqdef data fetch` offline;
#   3. nbval on every source notebook, in the smoke profile, on that copy's outputs;
#   4. a fresh clone of the committed repository: `dvc pull` from dvc-store/ leaves no output of an up-to-date
#      stage missing (a forgotten `dvc push`), stale stages listed (tools/dvc_store.py --status).
# Options: --no-unit skips step 1. Environment: TRIQDEF_SMOKE_COPY=DIR makes the copy in DIR instead of a fresh
# temporary folder; CIFAR10_ARCHIVE is passed on to `triqdef data fetch` (offline default: the committed sample).
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

unit_log=$(mktemp -t triqdef-unit-XXXXXX)
unit_pid=""
trap '[[ -z $unit_pid ]] || kill $(pgrep -P "$unit_pid") "$unit_pid" 2> /dev/null || true; rm -f "$unit_log" "$unit_log.end"' EXIT
if [[ ${1:-} != --no-unit ]]; then
  echo "== unit tests, in the background (their output follows nbval)"
  (python -m pytest -q tests > "$unit_log" 2>&1 && rc=0 || rc=$?; date +%s > "$unit_log.end"; exit $rc) &
  unit_pid=$!
fi

copy="${TRIQDEF_SMOKE_COPY:-$(mktemp -d -t triqdef-smoke-XXXXXX)}"
echo "== smoke pipeline: dvc repro in $copy"
TRIQDEF_OFFLINE=1 bash tools/pipeline_copy.sh "$copy" smoke
t_repro=$(date +%s)

echo "== nbval (smoke profile) on $copy/results"
(
  cd "$copy"
  export PYTHONPATH="$copy/lib${PYTHONPATH:+:$PYTHONPATH}" TRIQDEF_OFFLINE=1 TRIQDEF_PROFILE=smoke TRIQDEF_OUTPUT="$copy"
  python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/
)

t_nbval=$(date +%s)
unit_rc=0
if [[ -n $unit_pid ]]; then
  wait "$unit_pid" || unit_rc=$?
  unit_pid=""
  echo "== unit tests: $(( $(cat "$unit_log.end" 2> /dev/null || date +%s) - start )) s, beside the smoke pipeline"
  cat "$unit_log"
  [[ $unit_rc == 0 ]] || { echo "tools/test.sh: unit tests failed (pytest exit status $unit_rc)" >&2; exit 1; }
fi
t_unit=$(date +%s)

echo "== fresh clone: dvc pull from dvc-store/, then dvc status (tools/dvc_store.py --status)"
clone=$(mktemp -d -t triqdef-clone-XXXXXX)
git clone -q "$repo" "$clone"
(cd "$clone" && dvc pull --allow-missing --quiet && python tools/dvc_store.py --status)
rm -rf "$clone"
end=$(date +%s)
[[ -n ${TRIQDEF_SMOKE_COPY:-} ]] || rm -rf "$copy"   # kept on failure (set -e stops before this line)
echo "make test: done in $(( end - start )) s (dvc repro $(( t_repro - start )) s, nbval $(( t_nbval - t_repro )) s, then" \
     "waiting for the unit tests $(( t_unit - t_nbval )) s, fresh clone $(( end - t_unit )) s)"
