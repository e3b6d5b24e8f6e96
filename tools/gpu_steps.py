"""Issue 31, item 6: the training loop's own step times on this machine, per mode, through ``training.loop.fit``.

    python tools/gpu_steps.py --device cuda --out results/gpu/steps/steps.json
    python tools/gpu_steps.py --device cpu --short 2 --long 6 --modes qat_sequential,qat_stacked   # a CPU check

Each mode trains a fresh ResNet-20 (batch 128, channels-last, augmentation, one-cycle schedule, label smoothing 0.1:
the cpu profile's training settings) on synthetic CIFAR-sized images, twice: ``--short`` and ``--long`` steps. The
marginal time per step, (long wall - short wall) / (long - short), leaves out start-up, cuDNN's autotuning, the
warm-up and the capture. Modes:

* ``fp``, ``fp_captured``: the FP step, eager and in one CUDA graph (``base.compile``);
* ``qat_sequential``: joint QAT over 32/8/5/4/2 bits, one pass per bit-width (``base.stacked: off``, the CPU's);
* ``qat_stacked``, ``qat_stacked_captured``: the same with the bit-widths stacked (``base.stacked: on``), eager
  and in one CUDA graph;
* ``triqdef``, ``triqdef_captured``: the TriQDef step (every bit-width active, BACT's last stage; the ``gpu``
  profile's settings: GPDP every step, maps pooled by 2, patches from a pool of 12×12 ones), eager and with its
  device part in CUDA graphs (``base.compile``; one graph per key: GPDP runs every step here, so one).

It prints and writes, per mode, the marginal ms per step and the last logged losses (the modes train the same model
the same way, so their losses agree to float rounding), and the paper profile's joint-QAT time estimated from them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402

from triqdef import quant  # noqa: E402
from triqdef.bact import Schedule  # noqa: E402
from triqdef.config import TrainParams  # noqa: E402
from triqdef.defenses.steps import TriQDefSettings, TriQDefStep  # noqa: E402
from triqdef.models import build_model  # noqa: E402
from triqdef.training.loop import fit  # noqa: E402

BITS = [32, 8, 5, 4, 2]
ESTIMATORS = {8: "max", 5: "max", 4: "max", 2: "mse"}
MODES = {   # name: (bits, stacked, captured)
    "fp": (None, "off", False),
    "fp_captured": (None, "off", True),
    "qat_sequential": (BITS, "off", False),
    "qat_stacked": (BITS, "on", False),
    "qat_stacked_captured": (BITS, "on", True),
    "triqdef": ("triqdef", "off", False),
    "triqdef_captured": ("triqdef", "off", True),
}
TRIQDEF_PARAMS = {"taps": ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"), "gpdp_every": 1, "gpdp_joint": False,
                  "gpdp_sub_batch": 8, "downsample": 2, "pair_reduction": "mean"}   # params.yaml triqdef, gpu profile
PAPER_QAT_STEPS = 200 * (49_000 // 128)   # the paper profile's joint QAT run: 200 epochs of 383 steps


def train_params(steps: int) -> TrainParams:
    return TrainParams(lr=0.05, checkpoint_every=10**9, steps=steps, batch_size=128, momentum=0.9, weight_decay=1e-4,
                       nesterov=True, schedule="onecycle", milestones=(0.5, 0.75), pct_start=0.25, label_smoothing=0.1,
                       augment=True)


def model_for(bits, device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20")
    if bits:
        model = quant.quantize_model(model, bits, range_estimator=ESTIMATORS)
        x = torch.rand(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        for b in bits[1:]:
            quant.calibrate(model, [x], b)
    return model.to(device)


def triqdef_step(steps: int, images: torch.Tensor) -> TriQDefStep:
    """The TriQDef step of the gpu profile, every bit-width active from the first step (no BACT calibration)."""
    g = torch.Generator().manual_seed(1)
    pool = torch.rand(20, 3, 12, 12, generator=g)
    holdout = [images[:128].float() / 255]
    return TriQDefStep(TriQDefSettings.from_params(TRIQDEF_PARAMS), Schedule.constant(BITS, steps), pool, holdout, 0,
                       calibrate_new_bits=False)


def run_mode(name: str, steps: int, data, device, work: Path) -> dict:
    bits, stacked, captured = MODES[name]
    images, labels = data
    step_fn = triqdef_step(steps, images) if bits == "triqdef" else None
    bits = BITS if step_fn is not None else bits
    model = model_for(bits, device)
    t = time.perf_counter()
    res = fit(model, images, labels, train_params(steps), seed=0, out_path=work / f"{name}-{steps}.pt",
              meta={"kind": name}, work_dir=work, bits=None if step_fn is not None else bits, device=device,
              progress=False, stacked=stacked, capture=captured, step_fn=step_fn)
    if device.type == "cuda":
        torch.cuda.synchronize()
    last = res["history"][-1]
    return {"wall_s": time.perf_counter() - t, "fit_wall_s": res["wall_time_s"],
            "last": {k: round(v, 4) for k, v in last.items() if k.startswith("loss")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--short", type=int, default=20)
    ap.add_argument("--long", type=int, default=120)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not 0 < args.short < args.long:
        sys.exit(f"gpu_steps.py: error: modes {unknown} / --short {args.short} --long {args.long}: expected modes of "
                 f"{', '.join(MODES)} and 0 < short < long")
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (2048, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (2048,), generator=g))
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "batch_size": 128, "bits": BITS, "short": args.short, "long": args.long, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in modes:
            try:
                short = run_mode(name, args.short, data, device, Path(tmp))
                long = run_mode(name, args.long, data, device, Path(tmp))
                ms = 1000 * (long["fit_wall_s"] - short["fit_wall_s"]) / (args.long - args.short)
                out["modes"][name] = {"ms_per_step": round(ms, 2), "short": short, "long": long}
            except Exception as err:   # a mode that cannot run here is reported, the others still run
                out["modes"][name] = {"error": f"{type(err).__name__}: {err}"[:400]}
            print(name, json.dumps(out["modes"][name]), flush=True)
    qat = {k: v["ms_per_step"] for k, v in out["modes"].items() if k.startswith("qat") and "ms_per_step" in v}
    out["paper_joint_qat_minutes"] = {k: round(ms * PAPER_QAT_STEPS / 60_000, 1) for k, ms in qat.items()}
    print(json.dumps({k: v for k, v in out.items() if k != "modes"}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
