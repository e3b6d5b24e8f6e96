#!/bin/bash
# Run DVC stages one at a time, each alone (`dvc repro -s`: never its upstream), and push each one's outputs to
# dvc-store/ as soon as it is done: a from-scratch run split over several sessions loses at most the stage in
# progress. Progress lines (UTC) go to $LOG (default /tmp/run/progress.log), each stage's output to its own log.
# Before the first stage and after the last, `triqdef bench reference` measures the machine's reference step and
# appends it to results/bench/reference_log.jsonl (commit it with the stages): REPORT's "Pipeline time" converts each
# stage's seconds into reference steps with the measurement nearest its run. REFERENCE=0 skips that.
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
reference before "$@"
for stage in "$@"; do
  echo "$(date -u +%T) start $stage" >> "$LOG"
  if dvc repro -s "$stage" > "$(dirname "$LOG")/$(echo "$stage" | tr '/@' '__').log" 2>&1 && dvc push -q; then
    echo "$(date -u +%T) done $stage" >> "$LOG"
  else
    echo "$(date -u +%T) FAILED $stage (see $(dirname "$LOG")/$(echo "$stage" | tr '/@' '__').log)" | tee -a "$LOG" >&2
    exit 1
  fi
done
reference after "$@"
echo "$(date -u +%T) finished: $*" >> "$LOG"
