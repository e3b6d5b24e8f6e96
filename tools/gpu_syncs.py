"""Issue 31, item 2 on a GPU: host syncs per training step, counted by CUDA itself.

    python tools/gpu_syncs.py --out results/gpu/syncs/syncs.json       # on a CUDA machine

``tests/test_no_sync.py`` checks every step on the CPU with a guard that raises on a read of a tensor value into
Python; it cannot see a sync that happens inside PyTorch's C++ (a copy of a CPU tensor to the GPU inside the step,
a kernel that waits for the device). Here each step runs on CUDA under ``torch.cuda.set_sync_debug_mode("warn")``,
which warns at every synchronising CUDA call, and the warnings of 3 steps (after 2 warm-up steps) are counted.
Steps: the loop's FP and joint-QAT steps (sequential and stacked), PBAT, DWQ, QADT-R and TriQDef (its last BACT stage,
every bit-width, GPDP on), and two iterations of the patch optimiser; batch 128, ResNet-20, 32/8/5/4/2 bits.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402

from triqdef import quant  # noqa: E402
from triqdef.attacks import universal  # noqa: E402
from triqdef.bact import Schedule  # noqa: E402
from triqdef.defenses.qadt_r import QADTRStep  # noqa: E402
from triqdef.defenses.pbat import PBATStep  # noqa: E402
from triqdef.defenses.steps import DWQStep, TriQDefSettings, TriQDefStep  # noqa: E402
from triqdef.models import build_model  # noqa: E402
from triqdef.training.loop import train_step  # noqa: E402

BITS = (32, 8, 5, 4, 2)
TAPS = ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1")


def qat_model(x, device):
    torch.manual_seed(0)
    m = quant.quantize_model(build_model("resnet20"), BITS, range_estimator={8: "max", 5: "max", 4: "max", 2: "mse"})
    for b in BITS[1:]:
        quant.calibrate(m, [x.cpu()], b)
    return m.to(device).train()


def count(step, steps: int = 3, warmup: int = 2) -> dict:
    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(warmup, warmup + steps):
                step(i)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
    return {"syncs_per_step": len(syncs) / steps, "where": where[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_syncs.py: error: no CUDA device: expected a GPU machine (torch.cuda.set_sync_debug_mode)")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=g)
    pool = torch.rand(10, 3, 6, 6, generator=g)
    xd, yd = x.to(dev), y.to(dev)
    settings = TriQDefSettings.from_params({"taps": TAPS, "gpdp_every": 1, "gpdp_sub_batch": 8, "downsample": 2,
                                            "pair_reduction": "mean"})

    def loop_step(model, bits, stacked=False):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(i):
            opt.zero_grad(set_to_none=True)
            train_step(model, xd, yd, bits, 0.1, stacked)
            opt.step()
        return step

    def defense(make):
        model = qat_model(x, dev)
        fn = make()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(i):
            opt.zero_grad(set_to_none=True)
            fn(model, xd, yd, i)
            opt.step()
        return step

    def optimiser_step():
        model = qat_model(x, dev).eval()
        opt = universal.recipe("lavan", steps=2, step_size=0.1, images_per_patch=32)
        jobs = [universal._Job(universal.PatchRequest(t, seed=t), torch.Generator().manual_seed(t), torch.arange(128), t)
                for t in (3, 5)]
        contents = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), device="cpu").to(dev)

        def step(i):
            nonlocal contents
            with quant.use_bitwidth(model, 4):
                grad, _ = universal._gradient(model, jobs, contents, xd, yd, opt, dev)
            contents = (contents - 0.1 * grad.sign()).clamp(0, 1)
        return step

    steps = {
        "fp": lambda: loop_step(build_model("resnet20").to(dev).train(), None),
        "qat_sequential": lambda: loop_step(qat_model(x, dev), BITS),
        "qat_stacked": lambda: loop_step(qat_model(x, dev), BITS, True),
        "pbat": lambda: defense(lambda: PBATStep(BITS, 0)),
        "dwq": lambda: defense(lambda: DWQStep(BITS, 0)),
        "qadt_r": lambda: defense(lambda: QADTRStep(BITS, 0, pool)),
        "triqdef": lambda: defense(lambda: TriQDefStep(settings, Schedule([{"bits": BITS, "share": 1.0}], 100),
                                                       pool, [xd], 0, calibrate_new_bits=False)),
        "patch_optimiser": optimiser_step,
    }
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": {}}
    for name, make in steps.items():
        try:
            out["steps"][name] = count(make())
        except Exception as err:   # a step that cannot run here is reported; the others still run
            out["steps"][name] = {"error": f"{type(err).__name__}: {err}"[:300]}
        print(name, json.dumps(out["steps"][name]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
