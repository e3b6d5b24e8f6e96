#!/usr/bin/env bash
# The project's test command (`make test`, called by .ci/run):
#   1. unit tests;
#   2. the smoke-profile pipeline (the same CLI stages as dvc.yaml) in a temporary output folder;
#   3. nbval on every source notebook, in the smoke profile, on those outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
export TQDM_DISABLE=1 MPLBACKEND=Agg
start=$(date +%s)

python -m pytest -q tests

export TRIQDEF_PROFILE=smoke
export TRIQDEF_OUTPUT="${TRIQDEF_SMOKE_OUTPUT:-$(mktemp -d -t triqdef-smoke-XXXXXX)}"
echo "== smoke pipeline in $TRIQDEF_OUTPUT"
triqdef --quiet data fetch > /dev/null
triqdef --quiet data prepare
triqdef --quiet train fp
triqdef --quiet train qat --all-layers both
triqdef --quiet patches make
triqdef --quiet train cross-arch
triqdef --quiet train defense qat pbat dwq triqdef
triqdef --quiet train ablations

echo "== nbval (smoke profile)"
python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/
echo "make test: done in $(( $(date +%s) - start )) s"
