#!/usr/bin/env python3
"""Check that REPORT's store-based verdicts come from the outcome stores alone (issue 29: "a test deletes the
tables and rebuilds them").

    python tools/report_from_stores.py results          # exit 1 on any difference
    python tools/report_from_stores.py /tmp/copy/results --show

Copies ``RESULTS/outcomes`` (and nothing else: no table, no metric) into a temporary results folder, evaluates
every claim of REPORT there and on ``RESULTS`` itself, and compares, for each claim of
:data:`triqdef.reporting.report.FROM_STORES`, the verdict and our figure. It fails when one differs, or when one of
them misses its store (a claim the profile does not run, "not run in this profile", reads the same both ways). `make test` runs it on the smoke
pipeline's outputs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def compare(results: Path) -> list[tuple[int, str, str, str, bool]]:
    """(claim number, where, verdict with every result, verdict from the stores alone, same) for each claim of
    ``FROM_STORES``."""
    from triqdef.reporting import report

    if not (results / "outcomes").is_dir():
        raise SystemExit(f"report_from_stores: {results}/outcomes not found: expected a results folder with outcome stores")
    full = report.evaluate_claims(results)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(results / "outcomes", Path(tmp) / "outcomes")
        alone = report.evaluate_claims(Path(tmp))
    out = []
    for a, b in zip(full, alone):
        if a.claim.evaluate in report.FROM_STORES:
            missing_store = b.ours.startswith("(result `outcomes/")   # a store the stage should have written
            same = a.verdict == b.verdict and a.ours == b.ours and not missing_store
            out.append((a.number, a.claim.where, a.verdict, b.verdict, same))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--show", action="store_true", help="print every compared claim, not only differences")
    args = parser.parse_args(argv)
    rows = compare(args.results)
    bad = [r for r in rows if not r[4]]
    for number, where, with_tables, alone, same in rows:
        if args.show or not same:
            print(f"claim {number} ({where}): with tables '{with_tables}', from the stores alone '{alone}'"
                  + ("" if same else "  <- differs"))
    print(f"report_from_stores: {len(rows) - len(bad)} of {len(rows)} store-based claims decided the same from "
          f"{args.results}/outcomes alone")
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
