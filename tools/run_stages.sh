#!/bin/bash
# Run DVC stages one at a time, each alone (`dvc repro -s`: never its upstream), and push each one's outputs to
# dvc-store/ as soon as it is done: a from-scratch run split over several sessions loses at most the stage in
# progress. Progress lines (UTC) go to $LOG (default /tmp/run/progress.log), each stage's output to its own log.
# Before the first stage and after the last, `triqdef bench reference` measures the machine's reference step and
# appends it to results/bench/reference_log.jsonl (commit it with the stages): REPORT's "Pipeline time" converts each
# stage's seconds into reference steps with the measurements near its run. Stages at the end of the list that read
# that log (the summaries, report) run after the second measurement, so that it does not leave them stale; a list
# of only those takes no measurement. REFERENCE=0 skips the measurements.
#
#   nohup tools/run_stages.sh defense@pbat defense@triqdef ablations training &
#   tail -f /tmp/run/progress.log
set -u
cd "$(dirname "$0")/.."
LOG=${LOG:-/tmp/run/progress.log}
mkdir -p "$(dirname "$LOG")"
export PATH="$PWD/.venv/bin:$PATH" TQDM_DISABLE=1 MPLBACKEND=Agg
reference() {
  [ "${REFERENCE:-1}" = 0 ] && return 0
  triqdef --quiet bench reference --note "tools/run_stages.sh, $1 ${*:2}" >> "$LOG" 2>&1 \
    || echo "$(date -u +%T) reference step not measured (see $LOG)" >> "$LOG"
}
# The stages at the end of the list that read the reference log (seed_summary, length_summary, report) run after
# the "after" measurement: run before it, the measurement would leave them stale.
reads_log() {
  python - "$1" <<'PY'
import sys, yaml
stages = yaml.safe_load(open("dvc.yaml"))["stages"]
spec = stages.get(sys.argv[1].split("@")[0], {})
deps = (spec.get("do") or spec).get("deps", []) if isinstance(spec, dict) else []
sys.exit(0 if "results/bench/reference_log.jsonl" in deps else 1)
PY
}
stages=("$@")
split=${#stages[@]}
while [ "$split" -gt 0 ] && reads_log "${stages[$((split - 1))]}"; do split=$((split - 1)); done
run() {
  echo "$(date -u +%T) start $1" >> "$LOG"
  if dvc repro -s "$1" > "$(dirname "$LOG")/$(echo "$1" | tr '/@' '__').log" 2>&1 && dvc push -q; then
    echo "$(date -u +%T) done $1" >> "$LOG"
  else
    echo "$(date -u +%T) FAILED $1 (see $(dirname "$LOG")/$(echo "$1" | tr '/@' '__').log)" | tee -a "$LOG" >&2
    exit 1
  fi
}
[ "$split" -gt 0 ] && reference before "${stages[@]:0:split}"
for stage in "${stages[@]:0:split}"; do run "$stage"; done
[ "$split" -gt 0 ] && reference after "${stages[@]:0:split}"
for stage in "${stages[@]:split}"; do run "$stage"; done
echo "$(date -u +%T) finished: $*" >> "$LOG"
