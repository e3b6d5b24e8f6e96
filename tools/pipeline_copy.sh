#!/usr/bin/env bash
# Run the whole DVC pipeline of one profile from scratch in a copy of this repository:
#   tools/pipeline_copy.sh DIR PROFILE [OVERLAY.yaml]
# DIR receives the files git tracks or would track, less the outputs (results/, dvc.lock, dvc-store/); params.yaml's
# base.profile becomes PROFILE, and OVERLAY (optional) is merged into params.yaml, key by key, before the run (e.g.
# tools/gpu_dry_run.yaml: the gpu profile with its sizes cut, to test it on a CPU). Data: `triqdef data fetch`, which
# honours TRIQDEF_OFFLINE and CIFAR10_ARCHIVE. Then `dvc repro --no-commit`. Used by tools/test.sh (smoke) and
# tools/gpu_run.sh (gpu).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: tools/pipeline_copy.sh DIR PROFILE [OVERLAY.yaml]" >&2; exit 2; }
copy=$1 profile=$2 overlay=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ -z $overlay || -f $overlay ]] || { echo "tools/pipeline_copy.sh: error: overlay $overlay not found: expected a YAML file of params" >&2; exit 2; }
[[ -z $overlay ]] || overlay=$(cd "$(dirname "$overlay")" && pwd)/$(basename "$overlay")
mkdir -p "$copy"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do
      [[ -e $repo/$f && $f != results/* && $f != dvc.lock && $f != dvc-store/* ]] && printf '%s\0' "$f"
    done \
  | tar -C "$repo" --null -T - -cf - | tar -xf - -C "$copy"
cd "$copy"
# the copy's own code and outputs: nothing of the real repository's results/ is read or written
unset TRIQDEF_OUTPUT TRIQDEF_PROFILE TRIQDEF_DATA_DIR
export PYTHONPATH="$copy/lib${PYTHONPATH:+:$PYTHONPATH}"
python - "$profile" "$overlay" <<'PY'
import re
import sys
from pathlib import Path

import yaml

profile, overlay = sys.argv[1], sys.argv[2]
p = Path("params.yaml")
text, n = re.subn(r"(?m)^(base:\n(?:[ \t]+.*\n|\s*\n)*?[ \t]+profile:[ \t]*)\w+", rf"\g<1>{profile}", p.read_text(), count=1)
assert n == 1 and yaml.safe_load(text)["base"]["profile"] == profile, "params.yaml: base.profile not found"
if overlay:
    params = yaml.safe_load(text)

    def merge(into: dict, new: dict, where: str, depth: int) -> None:
        for key, value in new.items():
            if key not in into and depth < 2:  # a section and its profile must exist; keys inside a profile may be new
                sys.exit(f"tools/pipeline_copy.sh: error: overlay key {where}{key} is not in params.yaml")
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value, f"{where}{key}.", depth + 1)
            else:
                into[key] = value

    merge(params, yaml.safe_load(Path(overlay).read_text()) or {}, "", 0)
    text = yaml.safe_dump(params, sort_keys=False)
p.write_text(text)
PY
printf '[core]\n    no_scm = true\n' > .dvc/config.local   # the copy is no git repository
triqdef --quiet data fetch > /dev/null
dvc repro --no-commit --quiet
