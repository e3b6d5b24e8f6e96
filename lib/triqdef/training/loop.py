"""Training loops: float training and (multi-bit) quantization-aware fine-tuning (paper 4.1).

* SGD, momentum 0.9, weight decay 1e-4, batch 128 (paper 4.1).
* ``schedule: step`` is the paper's: lr 0.1, divided by 10 at 50 % and 75 % of
  training. ``schedule: onecycle`` (``torch.optim.lr_scheduler.OneCycleLR``)
  converges in few epochs and is what the short ``cpu``/``smoke`` runs use.
* Random crop (padding 4) and horizontal flip (:mod:`triqdef.data.augment`).
* Multi-bit QAT ("standard QAT" in every table): one shared backbone, each
  step runs every active bit-width on the same batch, one bit-width's graph
  at a time, and averages their cross-entropies (gradients accumulate).
* Checkpoints are written atomically and carry their metadata; progress is
  saved every ``checkpoint_every`` steps to ``results/.work/`` and a run that
  finds a matching partial checkpoint resumes from it. Data order,
  augmentation and dropout depend only on (seed, step), so an interrupted run
  ends with the same weights as an uninterrupted one (on CPU).
* Under ``torchrun`` the loop is data-parallel (:mod:`triqdef.training.distributed`):
  each rank trains on its shard of the same global batch, rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from triqdef import quant
from triqdef.training import distributed
from triqdef.data.augment import random_crop_flip
from triqdef.config import TrainParams
from triqdef.data.cifar import iter_batches, to_float
from triqdef.errors import TriqdefError
from triqdef.meta import atomic_path, plain, read_torch_file
from triqdef.models import MEMORY_FORMAT, MODEL_NAMES, build_model

log = logging.getLogger("triqdef.training.loop")

CHECKPOINT_FORMAT = "triqdef-checkpoint/1"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise TriqdefError(f"unknown device {name!r}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise TriqdefError("device 'cuda' requested but no CUDA device is available: use device: auto or cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainParams, total_steps: int):
    if cfg.schedule == "onecycle":
        if total_steps < 4:  # too short for a warm-up and an anneal phase
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        pct = min(max(cfg.pct_start, 2.5 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct, anneal_strategy="linear",
            div_factor=10.0, final_div_factor=100.0, cycle_momentum=False,
        )
    milestones = sorted({max(1, int(m * total_steps)) for m in cfg.milestones})
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


def step_batch(images: torch.Tensor, labels: torch.Tensor, step: int, seed: int, cfg: TrainParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The (augmented, float) batch of a given step: depends only on (seed, step)."""
    per_epoch = images.shape[0] // cfg.batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(images.shape[0])
    idx = torch.from_numpy(order[k * cfg.batch_size : (k + 1) * cfg.batch_size])
    x = images[idx]
    if cfg.augment:
        x = random_crop_flip(x, torch.Generator().manual_seed(seed * 1_000_003 + step))
    return to_float(x), labels[idx]


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, model: nn.Module, meta: dict, **state: Any) -> Path:
    """Write a checkpoint atomically: ``{"format", "meta", "model", ...state}``."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "meta": plain(meta), "model": model.state_dict(), **state}, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and validate a checkpoint file (one-line errors for missing/corrupt/foreign files)."""
    ckpt = read_torch_file(path, CHECKPOINT_FORMAT, "checkpoint", "'triqdef train'")
    if "meta" not in ckpt or "model" not in ckpt:
        raise TriqdefError(f"checkpoint {path} is not a triqdef checkpoint: expected format {CHECKPOINT_FORMAT}")
    return ckpt


def model_from_checkpoint(path: str | Path, kind: str | None = None, model_name: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint (float or switchable-precision) in eval mode.

    ``kind`` (``fp``/``qat``/...) and ``model_name``, when given, must match the
    checkpoint's metadata; any mismatch is a one-line :class:`TriqdefError`.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    if kind is not None and meta.get("kind") != kind:
        raise TriqdefError(f"checkpoint {path} holds a {meta.get('kind')!r} model: expected {kind!r}")
    if model_name is not None and meta.get("model") != model_name:
        raise TriqdefError(f"checkpoint {path} holds model {meta.get('model')!r}: expected {model_name!r}")
    if meta.get("model") not in MODEL_NAMES:
        raise TriqdefError(f"checkpoint {path} names unknown model {meta.get('model')!r}")
    model = build_model(meta["model"], meta.get("num_classes"))
    if meta.get("bits"):
        model = quant.quantize_model(model, meta["bits"], meta.get("first_last_bits"), meta.get("averaging_constant", 0.01),
                                     meta.get("range_estimator", "max"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise TriqdefError(f"checkpoint {path} does not match model {meta['model']} bits={meta.get('bits')}: {first}") from None
    return model.eval(), meta


def fingerprint(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the loop

class JointCrossEntropy(nn.Module):
    """The cross-entropy step's forward as one module: ``forward(x, y, bits)`` runs ``model`` at each bit-width of
    ``bits`` (``None``: as it is) on the batch and returns ``[(loss, logits), ...]``. In a process group
    :func:`fit` wraps it in DDP and calls it once per step with every bit-width, which gives every parameter a
    gradient in the one backward that DDP synchronises."""

    def __init__(self, model: nn.Module, bits: Sequence[int | None], label_smoothing: float):
        super().__init__()
        self.model, self.bits, self.label_smoothing = model, list(bits), label_smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor, bits: Sequence[int | None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for b in bits:
            with quant.use_bitwidth(self.model, b):
                logits = self.model(x)
            out.append((F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits))
        return out


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainParams,
    *,
    seed: int,
    out_path: Path,
    meta: dict,
    work_dir: Path,
    bits: Sequence[int] | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    step_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, int], dict[str, float]] | None = None,
    monitor: Callable[[nn.Module], dict[str, float]] | None = None,
    monitor_every: int = 0,
) -> dict:
    """Train ``model`` on (images uint8 N×3×H×W, labels) and write the final checkpoint to ``out_path``.

    ``bits=None`` trains the float model; otherwise ``model`` must come from
    :func:`triqdef.quant.quantize_model` and each step averages the
    cross-entropy over ``bits`` (one graph at a time). Resumes from a partial
    checkpoint in ``work_dir`` written by an identical run. ``stop_after``
    (tests) stops after that many steps, as an interruption would.
    ``step_fn(model, x, y, step)``, when given, replaces the cross-entropy
    step: it computes the losses and calls ``backward`` (the loop zeroes the
    gradients before and steps the optimizer after) and returns the values
    to log; the defenses (:mod:`triqdef.defenses.steps`) are such functions. It
    must depend only on (seed, step) and the model's state, for resuming.
    ``monitor(model)``, when given, evaluates the model (in eval mode, no update of weights, observers or BN)
    before the first step, every ``monitor_every`` steps and after the last: the convergence curve of
    notebook 02. Its time is measured apart and not counted in ``wall_time_s``.
    Returns ``{"history": [...], "monitor": [...], "steps": n, "wall_time_s": t, "images_per_s": r}``.

    In a process group (``torchrun``, :mod:`triqdef.training.distributed`) the model runs in
    ``DistributedDataParallel``, each rank on its shard of every global batch, the bit-widths' backward
    passes as one (:class:`JointCrossEntropy`); the history holds the ranks' mean losses and
    accuracies, and rank 0 alone writes checkpoints and shows progress. ``step_fn`` and ``monitor`` are
    single-process only.
    """
    device = device or torch.device("cpu")
    model.to(device)
    if distributed.active() and (step_fn is not None or monitor is not None):
        raise TriqdefError("data-parallel training runs the cross-entropy step without a monitor: expected "
                           "step_fn=None and monitor=None under torchrun")
    distributed.check_world(cfg.batch_size, "batch_size", distributed.world_size())
    writer = distributed.is_writer()
    bits = list(bits) if bits else None
    total = cfg.total_steps(images.shape[0])
    stable = {k: meta.get(k) for k in ("kind", "model", "bits", "first_last_bits", "range_estimator", "params", "data", "init")}
    run_id = fingerprint({"cfg": asdict(cfg), "bits": bits, "seed": seed, "meta": stable})
    partial = Path(work_dir) / f"{Path(out_path).stem}.{run_id}.partial.pt"
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, total)
    start, history, elapsed, curve, monitor_s = 0, [], 0.0, [], 0.0
    if partial.is_file():
        ck = read_checkpoint(partial)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, history, elapsed = ck["step"], ck["history"], ck["elapsed"]
        curve, monitor_s = ck.get("monitor", []), ck.get("monitor_s", 0.0)
        log.info("resuming %s from step %d/%d (%s)", out_path, start, total, partial)

    def observe(done: int) -> None:
        nonlocal monitor_s
        if monitor is None or not (done == 0 or done == total or (monitor_every and done % monitor_every == 0)):
            return
        if any(point["step"] == done for point in curve):
            return
        t = time.perf_counter()
        with torch.no_grad(), quant.eval_mode(model):
            curve.append({"step": done, **monitor(model)})
        monitor_s += time.perf_counter() - t

    observe(start)
    model.train()
    joint = JointCrossEntropy(model, bits or [None], cfg.label_smoothing)
    net = distributed.wrap(joint, device)  # ``joint`` itself in a single process
    # one process: one forward and backward per bit-width (one graph alive at a time); DDP: one for all of them,
    # so that its one gradient all-reduce sees every parameter (each bit-width's BN included)
    groups = [[b] for b in joint.bits] if net is joint else [joint.bits]
    bar = tqdm(total=total, initial=start, desc=f"train {meta.get('kind', '')} {meta.get('model', '')}",
               disable=not (progress and writer), unit="step")
    t0 = time.perf_counter() - elapsed
    for step in range(start, total):
        x, y = map(distributed.shard, step_batch(images, labels, step, seed, cfg))
        x, y = x.to(device, memory_format=MEMORY_FORMAT), y.to(device)
        torch.manual_seed(seed * 1_000_003 + step)  # dropout
        opt.zero_grad(set_to_none=True)
        record: dict[str, float] = {"step": step, "lr": opt.param_groups[0]["lr"]}
        if step_fn is not None:
            record.update(step_fn(model, x, y, step))
        for group in groups if step_fn is None else []:
            outputs = net(x, y, group)
            (sum(loss for loss, _ in outputs) / len(joint.bits)).backward()
            for b, (loss, logits) in zip(group, outputs):
                key = "fp" if b is None else str(b)
                record[f"loss_{key}"] = loss.item()
                record[f"acc_{key}"] = (logits.argmax(1) == y).float().mean().item()
        opt.step()
        sched.step()
        record.update(distributed.mean_over_ranks({k: v for k, v in record.items() if k.startswith(("loss", "acc"))}))
        history.append(record)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.startswith("loss")})
        done = step + 1
        t_observe = monitor_s
        observe(done)
        t0 += monitor_s - t_observe  # the monitor's time is not training time
        if writer and done < total and (done % cfg.checkpoint_every == 0 or done == stop_after):
            save_checkpoint(partial, model, meta, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            step=done, history=history, elapsed=time.perf_counter() - t0, monitor=curve,
                            monitor_s=monitor_s)
        if stop_after is not None and done >= stop_after and done < total:
            bar.close()
            return {"history": history, "steps": done, "interrupted": True}
    bar.close()
    wall = time.perf_counter() - t0
    result = {"history": history, "monitor": curve, "monitor_s": monitor_s, "steps": total, "wall_time_s": wall,
              "images_per_s": total * cfg.batch_size / max(wall, 1e-9)}
    if writer:
        save_checkpoint(out_path, model, dict(meta, steps=total, train_wall_time_s=wall), history=history, monitor=curve)
        if partial.exists():
            partial.unlink()
    distributed.barrier()  # every rank returns with the checkpoint written
    return result


def calibrate_all(model: nn.Module, holdout: torch.Tensor, batch_size: int, bits: Sequence[int] | None = None, device=None) -> int:
    """Calibrate every non-32 bit-width's observers and BN statistics on the held-out images."""
    batches = list(iter_batches(holdout, batch_size, device=device))
    seen = 0
    for b in bits or quant.model_bits(model):
        if b != quant.FP_BITS:
            seen = quant.calibrate(model, batches, b)
    return seen
