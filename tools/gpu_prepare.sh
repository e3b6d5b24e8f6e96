#!/usr/bin/env bash
# What tools/gpu_device.sh needs on a GPU machine without network, made here (with the project's venv):
#   bash tools/gpu_prepare.sh PROFILE...      e.g. gpu smoke
#   .whl/                   the Python packages that the machine's image lacks (Python 3.12, manylinux x86-64),
#                           pinned to this venv's versions (the list below: papermill's, ipykernel's and ART's needs)
#   .gpu/plan-PROFILE.json  the stage plan of each profile (tools/dag_run.py plan, from DVC, in a copy)
#   .gpu/cifar10-jpeg.tar.gz  the data ($CIFAR10_ARCHIVE, else data/cifar10-jpeg.tar.gz: `dvc pull data.dvc`)
# Both folders are ignored by git (add /.whl/ and /.gpu/ to .git/info/exclude); carry them in the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { echo "usage: tools/gpu_prepare.sh PROFILE..." >&2; exit 2; }
packages="adversarial-robustness-toolbox asttokens comm debugpy entrypoints executing fastjsonschema ipykernel ipython
  ipython-pygments-lexers jedi jsonschema jsonschema-specifications jupyter-client jupyter-core matplotlib-inline nbclient
  nbformat nest-asyncio2 papermill parso pexpect platformdirs prompt-toolkit ptyprocess pure-eval pyzmq referencing
  rpds-py stack-data tenacity tornado traitlets wcwidth"
pins=$(python -m pip freeze | python -c "
import re, sys
want = set(sys.argv[1].split())
norm = lambda s: re.sub(r'[-_.]+', '-', s).lower()
for line in sys.stdin:
    if '==' in line and norm(line.split('==')[0]) in want:
        print(line.strip())" "$packages")
mkdir -p .whl .gpu
platforms=""
for p in 2_28 2_27 2_24 2_17 2_5 2_31 2_34 2_35; do platforms+=" --platform manylinux_${p}_x86_64"; done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  $platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins
archive=${CIFAR10_ARCHIVE:-data/cifar10-jpeg.tar.gz}
[[ -f $archive ]] || { echo "gpu_prepare.sh: error: $archive not found: run 'dvc pull data.dvc' (the JPEG mirror), or set CIFAR10_ARCHIVE to it" >&2; exit 2; }
cp "$archive" .gpu/cifar10-jpeg.tar.gz
for profile in "$@"; do
  copy=$(mktemp -d)
  NO_REPRO=1 bash tools/pipeline_copy.sh "$copy" "$profile" > /dev/null
  (cd "$copy" && python "$OLDPWD/tools/dag_run.py" plan "$OLDPWD/.gpu/plan-$profile.json")
  rm -rf "$copy"
done
du -sh .whl .gpu
