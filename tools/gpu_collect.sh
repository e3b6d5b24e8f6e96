#!/usr/bin/env bash
# Bring a tools/gpu_device.sh run home: its tables, figures, metrics, metadata, curves, executed notebooks and
# REPORT.md to DEST (default results/gpu/), as tools/gpu_run.sh does, and its logs (per-stage times in
# dag_run.json, console, bench, calibration, machine) to DEST/run/.
#   bash tools/gpu_collect.sh FOLDER [DEST] [COMMIT]   FOLDER: where the device's $OUT files landed; DEST is replaced
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: tools/gpu_collect.sh FOLDER [DEST] [COMMIT]} dest=${2:-results/gpu} commit=${3:-$(git rev-parse HEAD)}
[[ -f $src/logs.tar.gz && -f $src/console.log ]] || { echo "gpu_collect.sh: error: $src: expected logs.tar.gz and console.log from tools/gpu_device.sh" >&2; exit 2; }
tmp=$(mktemp -d)
tar xzf "$src/logs.tar.gz" -C "$tmp"
[[ -f $src/results.tar.gz ]] && tar xzf "$src/results.tar.gz" -C "$tmp"
rm -rf "$dest" && mkdir -p "$dest/run"
for sub in tables figures metrics metadata plots notebooks attack_strength REPORT.md; do
  [[ -e $tmp/results/$sub ]] && cp -r "$tmp/results/$sub" "$dest/"
done
cp "$tmp"/results/dag_run/*.json "$tmp"/results/dag_run/*.txt "$dest/run/" 2>/dev/null || true
cp "$src/console.log" "$src/env.txt" "$dest/run/"
python - "$dest" "$commit" <<'PY'
import json, re, sys
from pathlib import Path
dest, commit = Path(sys.argv[1]), sys.argv[2]
console = (dest / "run/console.log").read_text()
total = re.findall(r"== total (\d+) s", console)
env = (dest / "run/env.txt").read_text().splitlines()
stages = json.loads((dest / "run/dag_run.json").read_text())["stages"]
info = {"commit": commit, "device": env[0] if env else "?", "wall_time_s": int(total[-1]) if total else None,
        "stages_done": sum(s["state"] == "done" for s in stages.values()), "stages": len(stages),
        "not_done": {n: s["state"] for n, s in stages.items() if s["state"] != "done"}}
(dest / "RUN.json").write_text(json.dumps(info, indent=2) + "\n")
print(json.dumps(info, indent=2))
PY
rm -rf "$tmp"
