"""Per-step ms of every training step the pipeline runs (FP, joint 5-bit-width QAT, PBAT, DWQ, TriQDef), here and
at an earlier commit, on the same random batch (ResNet-20, batch 128, channels-last, cpu-profile settings).

    python tools/bench_steps.py --against 7a21ce9 --rounds 2 --steps 8
    python tools/bench_steps.py --methods qat_5bit --rounds 7 --steps 20   # issue 13: the QAT step, >= 1.25x

Each round runs the earlier commit's library and this checkout's in fresh processes, one after the other (machine
drift hits both alike); prints the median ms per step of each method and the speedups. The activation range
estimator is each commit's own (params.yaml: ``mse`` at 7a21ce9; min/max at 8/5/4 and ``mse`` at 2 bits now).
TriQDef runs its last BACT stage (every bit-width), GPDP every 4th step on 8 images, joint, maps pooled by 2, with a
pool of random 6x6 patches; PBAT 3 signed steps; DWQ 3 PGD steps. Issue 13 asks for these figures before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = r"""
import json, statistics, sys, time
import torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from triqdef import quant
from triqdef.models import build_model
try:
    from triqdef.defenses.pbat import PBATStep
    from triqdef.defenses.steps import DWQStep, TriQDefSettings, TriQDefStep
except ImportError:
    try:  # PBAT beside the other steps, before issue 30
        from triqdef.defenses.steps import DWQStep, PBATStep, TriQDefSettings, TriQDefStep
    except ImportError:  # the flat layout before issue 11
        from triqdef.defenses import DWQStep, PBATStep, TriQDefSettings, TriQDefStep
from triqdef.bact import Schedule
estimator, steps, wanted = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
bits = [32, 8, 5, 4, 2]
g = torch.Generator().manual_seed(0)
x = torch.rand(128, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), generator=g)

def qmodel():
    torch.manual_seed(0)
    m = quant.quantize_model(build_model("resnet20"), bits, range_estimator=estimator)
    for b in bits[1:]:
        quant.calibrate(m, [x], b)
    return m.train()

def plain(model, bit_list):
    def step(m, xb, yb, s):
        if bit_list == [None]:  # the float model (older use_bitwidth takes no None)
            F.cross_entropy(m(xb), yb).backward()
            return {}
        for b in bit_list:
            with quant.use_bitwidth(m, b):
                (F.cross_entropy(m(xb), yb) / len(bit_list)).backward()
        return {}
    return step

settings = TriQDefSettings.from_params({"taps": ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"),
                                        "gpdp_every": 4, "gpdp_joint": True, "gpdp_sub_batch": 8, "downsample": 2,
                                        "pair_reduction": "mean"})
pool = torch.rand(10, 3, 6, 6, generator=g)
methods = {
    "fp": (lambda: build_model("resnet20").train(), lambda m: plain(m, [None])),
    "qat_5bit": (qmodel, lambda m: plain(m, bits)),
    "pbat": (qmodel, lambda m: PBATStep(bits, 0)),
    "dwq": (qmodel, lambda m: DWQStep(bits, 0)),
    "triqdef": (qmodel, lambda m: TriQDefStep(settings, Schedule([{"bits": bits, "share": 1.0}], 1000), pool, [x], 0,
                                              calibrate_new_bits=False)),
}
out = {}
for name, (make, make_step) in methods.items():
    if name not in wanted:
        continue
    model = make()
    step_fn = make_step(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(2 + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step_fn(model, x, y, i)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    out[name] = 1000 * statistics.median(times)
print(json.dumps(out))
"""


METHODS = ("fp", "qat_5bit", "pbat", "dwq", "triqdef")


def current_estimator() -> dict[str, str]:
    """This checkout's activation range estimator per bit-width (params.yaml ``quant.common.activation_range``)."""
    import yaml

    return {str(k): v for k, v in yaml.safe_load((ROOT / "params.yaml").read_text())["quant"]["common"]
            ["activation_range"].items()}


def run(lib: Path, estimator, steps: int, methods, env: dict | None = None) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", STEPS, str(lib), json.dumps(estimator), str(steps), ",".join(methods)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"tools/bench_steps.py: error: the step benchmark failed with {lib}: "
                         f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="7a21ce9")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per method (after 2 warm-up steps)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="the steps to time (issue 13's acceptance figure: --methods qat_5bit --rounds 7 --steps 20)")
    ap.add_argument("--allocator", choices=("both-default", "as-run"), default="as-run",
                    help="as-run: this checkout's steps with glibc's allocator tuned as the pipeline now runs them "
                         "(triqdef.allocator), the earlier commit's without; both-default: the code alone")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "lib"))
    from triqdef.allocator import tuned_environment

    base_env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    now_env = tuned_environment() if args.allocator == "as-run" else base_env
    current = current_estimator()
    before: dict[str, list[float]] = {}
    after: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(old), args.against],
                       check=True, capture_output=True)
        try:
            old_estimator = yaml.safe_load((old / "params.yaml").read_text())["quant"]["common"].get("activation_range", "max")
            for r in range(args.rounds):
                for store, lib, est, env in ((before, old / "lib", old_estimator, base_env),
                                             (after, ROOT / "lib", current, now_env)):
                    for k, v in run(lib, est, args.steps, args.methods, env).items():
                        store.setdefault(k, []).append(v)
                print(f"round {r + 1}: " + ", ".join(f"{k} {before[k][-1]:.0f} -> {after[k][-1]:.0f} ms" for k in after),
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    rows = {k: {"ms_before": round(statistics.median(before[k]), 1), "ms_now": round(statistics.median(after[k]), 1),
                "speedup": round(statistics.median(before[k]) / statistics.median(after[k]), 3)} for k in after}
    print(json.dumps({"against": args.against, "rounds": args.rounds, "steps": args.steps, "allocator": args.allocator,
                      "methods": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
