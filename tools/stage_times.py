#!/usr/bin/env python3
"""Each stage's recorded wall time here beside the same stage's at another git revision, and their ratio.

    python tools/stage_times.py                  # this tree's results/metrics against main's
    python tools/stage_times.py --against 3915955 --speed-from stq_train

The times are the ones ``results/REPORT.md`` ("Pipeline time") sums
(:func:`triqdef.reporting.report.stage_times`). Two runs on machines of
different speed differ by about one factor on every stage whose work did not
change; ``--speed-from STAGE...`` takes that factor (the ratio of the summed
times of those stages, which must have done the same work in both runs: the
same params and outputs, e.g. a stage rerun bit-identically) and prints this
tree's total divided by it: the total this run would have recorded on the
other revision's machine. That is an estimate, not a measurement, and it means
something only when every stage of this tree ran on the one machine; the
README says which figure it quotes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from triqdef.reporting.report import stage_times  # noqa: E402


def results_at(rev: str, into: Path) -> Path:
    """``results/metrics`` and ``results/metadata`` of git revision ``rev``, written under ``into``."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "--",
                              "results/metrics", "results/metadata"], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"stage_times: git revision {rev!r} not found: expected a commit, branch or tag of this repository")
    for name in listing.stdout.split():
        if not name.endswith(".json"):
            continue
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{name}"], capture_output=True, check=True).stdout
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return into / "results"


def fmt(value: float, spec: str) -> str:
    """``value`` formatted, or "–" where it is NaN (the stage is missing on one side, or took 0 s there)."""
    return "–" if value != value else format(value, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="main", help="git revision whose recorded stage times to compare with")
    ap.add_argument("--speed-from", nargs="+", default=[], metavar="STAGE",
                    help="stages that did the same work in both runs: their time ratio is the machine-speed factor")
    args = ap.parse_args()
    here = stage_times(ROOT / "results").set_index("stage")
    with tempfile.TemporaryDirectory() as tmp:
        there = stage_times(results_at(args.against, Path(tmp))).set_index("stage")
    table = here[["seconds"]].merge(there[["seconds"]], how="outer", left_index=True, right_index=True,
                                    suffixes=("_here", "_there"))
    table["ratio"] = table["seconds_here"] / table["seconds_there"].where(table["seconds_there"] > 0)
    print(f"| stage | s ({args.against}) | s (this tree) | ratio |\n|---|---|---|---|")
    for stage, r in table.iterrows():
        print(f"| {stage} | {fmt(r.seconds_there, '.0f')} | {fmt(r.seconds_here, '.0f')} | {fmt(r.ratio, '.2f')} |")
    total_here, total_there = table["seconds_here"].sum() / 60, table["seconds_there"].sum() / 60
    print(f"\ntotal: {total_there:.1f} min ({args.against}), {total_here:.1f} min (this tree)")
    summary = {"against": args.against, "total_min_here": round(total_here, 1), "total_min_there": round(total_there, 1)}
    if args.speed_from:
        missing = [s for s in args.speed_from if s not in table.index or table.loc[s].isna().any()]
        if missing:
            sys.exit(f"stage_times: --speed-from stage(s) {', '.join(missing)} not recorded in both runs: "
                     f"expected names from the table above")
        factor = table.loc[args.speed_from, "seconds_here"].sum() / table.loc[args.speed_from, "seconds_there"].sum()
        summary |= {"speed_from": args.speed_from, "speed_factor": round(factor, 3),
                    "total_min_here_at_their_speed": round(total_here / factor, 1)}
        print(f"machine-speed factor from {', '.join(args.speed_from)}: {factor:.3f}; this tree's total at the "
              f"other run's speed (an estimate): {total_here / factor:.1f} min")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
