#!/bin/bash
# Run DVC stages one at a time, each alone (`dvc repro -s`: never its upstream), and push each one's outputs to
# dvc-store/ as soon as it is done: a from-scratch run split over several sessions loses at most the stage in
# progress. Progress lines (UTC) go to $LOG (default /tmp/run/progress.log), each stage's output to its own log.
#
#   nohup tools/run_stages.sh defense@pbat defense@triqdef ablations training &
#   tail -f /tmp/run/progress.log
set -u
cd "$(dirname "$0")/.."
LOG=${LOG:-/tmp/run/progress.log}
mkdir -p "$(dirname "$LOG")"
export PATH="$PWD/.venv/bin:$PATH" TQDM_DISABLE=1 MPLBACKEND=Agg
for stage in "$@"; do
  echo "$(date -u +%T) start $stage" >> "$LOG"
  if dvc repro -s "$stage" > "$(dirname "$LOG")/$(echo "$stage" | tr '/@' '__').log" 2>&1 && dvc push -q; then
    echo "$(date -u +%T) done $stage" >> "$LOG"
  else
    echo "$(date -u +%T) FAILED $stage (see $(dirname "$LOG")/$(echo "$stage" | tr '/@' '__').log)" | tee -a "$LOG" >&2
    exit 1
  fi
done
echo "$(date -u +%T) finished: $*" >> "$LOG"
