"""Is it better, on this machine, to run two pipeline stages side by side on one thread each than one at a time on
all cores? Times the training steps of tools/bench_steps.py (ResNet-20, batch 128) three ways: one process on 2
threads, one on 1 thread, and two 1-thread processes at once; prints, per step, the work two 1-thread processes do
against one 2-thread process, and the 1-thread step alone (README "Time": why the pipeline runs one stage at a
time on 2 cores).

    python tools/bench_threads.py --steps 6 --methods fp qat_5bit triqdef
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "lib"))

import bench_steps  # noqa: E402  (the step snippet and its methods)


def main() -> int:
    from triqdef.allocator import tuned_environment

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per method (after 2 warm-up steps)")
    ap.add_argument("--methods", nargs="+", choices=bench_steps.METHODS, default=["fp", "qat_5bit", "triqdef"])
    args = ap.parse_args()
    if args.steps < 1:
        sys.exit(f"bench_threads: error: --steps {args.steps}: expected at least 1")
    estimator = bench_steps.current_estimator()

    def launch(threads: int) -> subprocess.Popen:
        env = dict(tuned_environment(), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        return subprocess.Popen([sys.executable, "-c", bench_steps.STEPS, str(ROOT / "lib"), json.dumps(estimator),
                                 str(args.steps), ",".join(args.methods)], env=env, stdout=subprocess.PIPE, text=True)

    ms = {}
    for label, threads, n in (("one 2-thread", 2, 1), ("one 1-thread", 1, 1), ("two 1-thread", 1, 2)):
        procs = [launch(threads) for _ in range(n)]
        outs = []
        for p in procs:
            text, _ = p.communicate()
            if p.returncode:
                sys.exit(f"bench_threads: error: the step benchmark ({label}) exited with {p.returncode}")
            outs.append(json.loads(text.strip().splitlines()[-1]))
        ms[label] = {m: sum(o[m] for o in outs) / n for m in args.methods}
    rows = {m: {"ms_2_threads": round(ms["one 2-thread"][m], 1), "ms_1_thread_alone": round(ms["one 1-thread"][m], 1),
                "ms_1_thread_beside_another": round(ms["two 1-thread"][m], 1),
                "work_ratio": round(2 * ms["one 2-thread"][m] / ms["two 1-thread"][m], 3)} for m in args.methods}
    print(json.dumps({"steps": args.steps, "methods": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
