"""Time one joint 5-bit-width QAT step (ResNet-20, batch 128, channels-last, SGD) against an earlier commit.

    python tools/bench_qat_step.py --against 7a21ce9 --rounds 5 --steps 20

Each round runs, in fresh processes one after the other so that machine drift hits both alike, the step with the
library of ``--against`` (checked out with ``git worktree`` into a temporary folder, with the activation range
estimator its params.yaml used: ``mse``) and with this checkout's library (this params.yaml's estimator). Prints
each run's median ms per step and the ratio of the medians over all rounds (issue 13's acceptance: >= 1.25).
``--allocator as-run`` (default) starts this checkout's step the way the pipeline now starts every process (glibc's
allocator tuned, :mod:`triqdef.allocator`); ``both-default`` measures the code alone.
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = r"""
import sys, time, statistics, json, torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from triqdef import quant
from triqdef.models import build_model
estimator, steps = json.loads(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
x = torch.rand(128, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), generator=g)
bits = (32, 8, 5, 4, 2)
model = quant.quantize_model(build_model("resnet20"), bits, range_estimator=estimator)
for b in bits[1:]:
    quant.calibrate(model, [x], b)
model.train()
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
times = []
for i in range(3 + steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for b in bits:
        with quant.use_bitwidth(model, b):
            (F.cross_entropy(model(x), y) / len(bits)).backward()
    opt.step()
    if i >= 3:
        times.append(time.perf_counter() - t0)
print(1000 * statistics.median(times))
"""


def run(lib: Path, estimator, steps: int, env: dict | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", STEP, str(lib), json.dumps(estimator), str(steps)],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="7a21ce9", help="the earlier commit (default: 7a21ce9, issue 13's reference)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--allocator", choices=("both-default", "as-run"), default="as-run",
                    help="as-run: this checkout's step with glibc's allocator tuned as the pipeline now starts every "
                         "process (triqdef.allocator), the earlier commit's without, as its pipeline ran; "
                         "both-default: both without (the code's own gain)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "lib"))
    from triqdef.allocator import tuned_environment

    base_env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    now_env = tuned_environment() if args.allocator == "as-run" else base_env
    current = {str(k): v for k, v in yaml.safe_load((ROOT / "params.yaml").read_text())["quant"]["common"]
               ["activation_range"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(old), args.against],
                       check=True, capture_output=True)
        try:
            old_estimator = yaml.safe_load((old / "params.yaml").read_text())["quant"]["common"].get("activation_range", "max")
            before, after = [], []
            for r in range(args.rounds):
                before.append(run(old / "lib", old_estimator, args.steps, base_env))
                after.append(run(ROOT / "lib", current, args.steps, now_env))
                print(f"round {r + 1}: {args.against} {before[-1]:.1f} ms ({old_estimator}), "
                      f"now {after[-1]:.1f} ms ({current})", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    ratio = statistics.median(before) / statistics.median(after)
    print(json.dumps({"against": args.against, "median_ms_before": round(statistics.median(before), 1),
                      "median_ms_now": round(statistics.median(after), 1), "speedup": round(ratio, 3),
                      "rounds": args.rounds, "steps": args.steps, "allocator": args.allocator}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
