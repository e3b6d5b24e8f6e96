"""Trace the training of the TriQDef ablation `every_step_full_res` (README "Results", the speed-settings row):
re-run it with the profile's seed, data and settings up to step STOP (default 285), in a process of its own, and
print, every 10 steps and at steps 265-275, the step's own records (losses, FDP, accuracies: compare with
results/plots/ablations/triqdef-every_step_full_res.csv), the total gradient norm after the backward, the smallest
min-max range of the GPDP input-gradient maps, and how far the parameters and float buffers moved since the
previous step. Writes /tmp/diag/grad_norms.json (and a throw-away checkpoint). Diagnostic, not a stage.

    PYTHONPATH=lib .venv/bin/python tools/trace_training.py 280 > /tmp/diag/log.txt
"""
import json
import sys
import tempfile
from pathlib import Path
import torch
from triqdef.config import load_config
from triqdef.stages import common as pipeline
from triqdef.stages.defense import build_step, initial_model
from triqdef.training.loop import fit, training_device
from triqdef import perceptual as P

stop = int(sys.argv[1]) if len(sys.argv) > 1 else 285
cfg = load_config()
variant = "every_step_full_res"
train, q = cfg.defenses, cfg.quant
splits = pipeline.load_data(cfg)
init_path, model, _ = initial_model(cfg, train.init)
device = training_device(cfg.base)
total = train.total_steps(len(splits.train.labels))
step_fn, settings = build_step("triqdef", cfg, model, splits, total, variant, copy_bn=(train.init == "fp"), seed=cfg.base.seed)
log, ranges = [], []
orig_minmax = P._minmax
def spy(m, eps):
    flat = m.detach().flatten(1)
    ranges.append(float((flat.amax(1) - flat.amin(1)).min()))
    return orig_minmax(m, eps)
P._minmax = spy
prev = {}
def flat(tensors):
    return torch.cat([t.detach().float().flatten() for t in tensors])
def wrapped(model, x, y, step):
    ranges.clear()
    params, buffers = flat(model.parameters()), flat([b for b in model.buffers() if b.is_floating_point()])
    moved = {} if not prev else {"param_delta": float((params - prev["p"]).norm()), "buffer_delta": float((buffers - prev["b"]).norm()),
                                 "param_delta_max": float((params - prev["p"]).abs().max())}
    prev.update(p=params, b=buffers)
    out = step_fn(model, x, y, step)
    norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters() if p.grad is not None))
    try:
        pairs = dict(out)
    except (TypeError, ValueError):
        pairs = {}
    losses = {k: (float(v) if torch.is_tensor(v) and v.numel() == 1 else v) for k, v in pairs.items()}
    losses = {k: v for k, v in losses.items() if isinstance(v, (int, float))}
    log.append({"step": step, "grad_norm": float(norm), "min_map_range": min(ranges) if ranges else None, **moved, **losses})
    if step % 10 == 0 or 265 <= step <= 275:
        print(log[-1], flush=True)
    return out
for attr in dir(step_fn):   # keep what fit reads off the step (capturable parts etc.)
    if not attr.startswith("__") and not hasattr(wrapped, attr):
        try: setattr(wrapped, attr, getattr(step_fn, attr))
        except Exception: pass
out = Path("/tmp/diag"); out.mkdir(exist_ok=True)
with tempfile.TemporaryDirectory() as work:
    fit(model, splits.train.images, splits.train.labels, train, seed=cfg.base.seed, out_path=out / "model.pt", meta={},
        work_dir=Path(work), bits=list(q.bits), device=device, progress=False, step_fn=wrapped, stop_after=stop)
(out / "grad_norms.json").write_text(json.dumps(log))
