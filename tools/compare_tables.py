"""Compare the result tables of two runs cell by cell, timing columns aside.

    python tools/compare_tables.py OLD_TABLES_DIR NEW_TABLES_DIR

For every ``*.csv`` table in either folder: present in both, same columns, and
every cell of every non-timing column equal as written (to the digit). Timing
columns (wall time, ms, images/s, and the time / latency ratios of Tables 17
and 18) measure the machine, not the method, and are listed but not compared.
Prints one line per table and exits 1 when any table differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

TIMING = re.compile(r"(^eval_s$|images/s|\(ms\)|\bms\b|time ×|ratio \(median\)|ratio p10|wall|seconds)")


def compare(old: Path, new: Path) -> list[str]:
    """One line per table: ``same``, or what differs."""
    lines = []
    for name in sorted({p.name for p in old.glob("*.csv")} | {p.name for p in new.glob("*.csv")}):
        a, b = old / name, new / name
        if not a.is_file() or not b.is_file():
            lines.append(f"DIFF {name}: only in {'new' if b.is_file() else 'old'}")
            continue
        x, y = pd.read_csv(a, dtype=str, keep_default_na=False), pd.read_csv(b, dtype=str, keep_default_na=False)
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            lines.append(f"DIFF {name}: columns or rows differ ({list(x.columns)} x {len(x)} vs {list(y.columns)} x {len(y)})")
            continue
        timing = [c for c in x.columns if TIMING.search(c)]
        cols = [c for c in x.columns if c not in timing]
        diff = (x[cols] != y[cols])
        if diff.to_numpy().any():
            r, c = next((r, c) for r in range(len(x)) for c in cols if diff.iloc[r][c])
            lines.append(f"DIFF {name}: {int(diff.to_numpy().sum())} cells, first row {r} column {c!r}: "
                         f"{x.iloc[r][c]!r} -> {y.iloc[r][c]!r}")
        else:
            skipped = f" (timing columns not compared: {', '.join(timing)})" if timing else ""
            lines.append(f"same {name}: {len(x)} rows x {len(cols)} columns{skipped}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args(argv)
    for d in (args.old, args.new):
        if not d.is_dir():
            print(f"compare_tables: error: {d} is not a folder of result tables", file=sys.stderr)
            return 2
    lines = compare(args.old, args.new)
    print("\n".join(lines))
    return 1 if any(line.startswith("DIFF") for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
