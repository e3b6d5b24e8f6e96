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

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
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
from triqdef.training.graphed import CapturedStep, capturable_optimizer, check_capturable, fill_momentum_buffers
from triqdef.training.passes import PassCounter, uncounted
from triqdef.training.records import StepRecord, settle

log = logging.getLogger("triqdef.training.loop")
CAPTURE_WARMUP = 3   # eager steps before a step is captured (momentum buffers, cuDNN plans)

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


def training_device(base) -> torch.device:
    """The device a training stage runs on (``base.device``), checked against ``base.compile`` before any data is
    read: a step can be captured in a CUDA graph only on a CUDA device (one line otherwise)."""
    device = resolve_device(base.device)
    if base.compile:
        check_capturable(device)
    return device


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

def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: Sequence[int] | None,
               label_smoothing: float = 0.0, stacked_bits: bool = False) -> StepRecord:
    """The loop's own step: forward, cross-entropy and backward of the float model (``bits=None``) or of every
    bit-width of ``bits`` (joint QAT: one graph at a time, each ``CE_b / |bits|`` backpropagated, so the gradients
    accumulate to that of the mean). Logs ``loss_<b>`` and ``acc_<b>`` (``fp`` for the float model) as detached
    tensors, read later (:mod:`triqdef.training.records`): no host sync inside the step.

    ``stacked_bits``: joint QAT's bit-widths in one stacked pass instead (:func:`triqdef.stacked.joint_loss`, the
    same mean and gradient to float rounding); each ``loss_<b>`` is then that bit-width's cross-entropy recomputed
    from its detached logits."""
    record = StepRecord()
    if stacked_bits and bits:
        from triqdef import stacked

        loss, logits = stacked.joint_loss(model, x, y, bits, label_smoothing)
        loss.backward()
        with torch.no_grad():
            for g, b in enumerate(bits):
                record[f"loss_{b}"] = F.cross_entropy(logits[g], y, label_smoothing=label_smoothing)
                record[f"acc_{b}"] = (logits[g].argmax(1) == y).float().mean()
        return record
    for b in bits or [None]:
        with quant.use_bitwidth(model, b):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            (loss / (len(bits) if bits else 1)).backward()
        key = "fp" if b is None else str(b)
        record[f"loss_{key}"] = loss
        record[f"acc_{key}"] = (logits.argmax(1) == y).float().mean()
    return record


def use_stacked(setting: str, model: nn.Module, device: torch.device, bits: Sequence[int] | None) -> bool:
    """``base.stacked`` for this run: ``auto`` stacks joint QAT on CUDA only (on the 2-core CPU the stacked step is
    1.78x slower, docs/design.md#stacked-bit-widths); ``on`` refuses a model that cannot be stacked."""
    from triqdef.models import CifarResNet

    if setting not in ("auto", "on", "off"):
        raise TriqdefError(f"parameter base.stacked = {setting!r}: expected auto, on or off")
    stackable = bool(bits) and len(bits) > 1 and isinstance(model, CifarResNet)
    if setting == "on" and bits and not isinstance(model, CifarResNet):
        raise TriqdefError(f"parameter base.stacked = 'on': expected a CIFAR ResNet, which the stacked pass "
                           f"supports; got {type(model).__name__} (set base.stacked: auto or off)")
    return stackable and (setting == "on" or (setting == "auto" and device.type == "cuda"))


def settle_history(history: list) -> list:
    """Every record of ``history`` as a plain dict of Python values, in place (:func:`records.settle`). The settled
    records are a prefix of the list, so only the unsettled tail is visited."""
    i = len(history)
    while i > 0 and isinstance(history[i - 1], StepRecord):
        i -= 1
    history[i:] = [settle(record) for record in history[i:]]
    return history


class JointCrossEntropy(nn.Module):
    """The cross-entropy step's forward as one module, for data-parallel training: ``forward(x, y)`` runs ``model``
    at each of ``bits`` (``None``: as it is) on the batch, all in one stacked pass when ``stacked``
    (:func:`triqdef.stacked.stacked_logits`), and returns ``[(loss, logits), ...]``. :func:`fit` wraps it in DDP and
    backpropagates the mean of the losses once, which gives every parameter (each bit-width's BN included) a
    gradient in the one backward that DDP synchronises."""

    def __init__(self, model: nn.Module, bits: Sequence[int | None], label_smoothing: float, stacked: bool = False):
        super().__init__()
        self.model, self.bits, self.label_smoothing, self.stacked = model, list(bits), label_smoothing, stacked

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.stacked:
            from triqdef import stacked

            logits = stacked.stacked_logits(self.model, x, self.bits)
            return [(F.cross_entropy(lg, y, label_smoothing=self.label_smoothing), lg) for lg in logits]
        out = []
        for b in self.bits:
            with quant.use_bitwidth(self.model, b):
                logits = self.model(x)
            out.append((F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits))
        return out


def capturable_step(step_fn) -> bool:
    """Whether a ``step_fn`` comes in the two parts a CUDA graph needs: ``prepare(model, x, y, step)``, eager (host
    draws, Python decisions), returning a :class:`~triqdef.defenses.steps.Prepared`, and ``compute(model, *inputs,
    key=)``, which reads nothing into Python (:class:`~triqdef.defenses.steps.TriQDefStep`)."""
    return callable(getattr(step_fn, "prepare", None)) and callable(getattr(step_fn, "compute", None))


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
    step_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, int], Mapping] | None = None,
    monitor: Callable[[nn.Module], dict[str, float]] | None = None,
    monitor_every: int = 0,
    stacked: str = "off",
    capture: bool = False,
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
    to log (Python numbers, or detached tensors in a
    :class:`~triqdef.training.records.StepRecord`, read outside the step); the defenses (:mod:`triqdef.defenses.steps`) are such functions. It
    must depend only on (seed, step) and the model's state, for resuming.
    ``monitor(model)``, when given, evaluates the model (in eval mode, no update of weights, observers or BN)
    before the first step, every ``monitor_every`` steps and after the last: the convergence curve of
    notebook 02. Its time is measured apart and not counted in ``wall_time_s``.
    ``stacked`` (``base.stacked``: auto | on | off, :func:`use_stacked`) runs joint QAT's bit-widths in one stacked
    pass; ``capture`` (``base.compile``) captures the loop's own step (FP or joint QAT), or the device part of a
    two-part ``step_fn`` (:func:`capturable_step`; TriQDef's, one graph per key; other defenses run eagerly), in a
    CUDA graph after 3 eager steps (:mod:`triqdef.training.graphed`), with fused SGD and a tensor learning
    rate. Neither changes the maths; both are refused in one line where they cannot run.
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
    stack = use_stacked(stacked, model, device, bits) if step_fn is None else False
    if capture:
        check_capturable(device)
        if step_fn is not None and not capturable_step(step_fn):
            log.info("base.compile: %s runs its own step eagerly (the FP, joint-QAT and TriQDef steps are captured)",
                     meta.get("kind", "this run"))
            capture = False
    if capture and distributed.active():
        raise TriqdefError("parameter base.compile = true under torchrun: expected base.compile: false (a captured "
                           "step in a process group is not supported yet)")
    stable = {k: meta.get(k) for k in ("kind", "model", "bits", "first_last_bits", "range_estimator", "params", "data", "init")}
    mode = {"stacked": stack, "captured": capture} if (stack or capture) else {}   # the CPU's run ids stay as before
    run_id = fingerprint({"cfg": asdict(cfg), "bits": bits, "seed": seed, "meta": stable, **mode})
    partial = Path(work_dir) / f"{Path(out_path).stem}.{run_id}.partial.pt"
    opt = (capturable_optimizer(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, device)
           if capture else make_optimizer(model, cfg))
    sched = make_scheduler(opt, cfg, total)
    start, history, elapsed, curve, monitor_s, passes = 0, [], 0.0, [], 0.0, None
    if partial.is_file():
        ck = read_checkpoint(partial)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if capture:   # the learning rate back on the device, where the captured step reads it
            for group in opt.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
            fill_momentum_buffers(opt)
        start, history, elapsed = ck["step"], ck["history"], ck["elapsed"]
        curve, monitor_s, passes = ck.get("monitor", []), ck.get("monitor_s", 0.0), ck.get("passes")
        log.info("resuming %s from step %d/%d (%s)", out_path, start, total, partial)

    def observe(done: int) -> None:
        nonlocal monitor_s
        if monitor is None or not (done == 0 or done == total or (monitor_every and done % monitor_every == 0)):
            return
        if any(point["step"] == done for point in curve):
            return
        t = time.perf_counter()
        with torch.no_grad(), quant.eval_mode(model), uncounted():
            curve.append({"step": done, **monitor(model)})
        monitor_s += time.perf_counter() - t

    def one_step(x: torch.Tensor, y: torch.Tensor) -> dict:
        opt.zero_grad(set_to_none=True)
        record = train_step(model, x, y, bits, cfg.label_smoothing, stack)
        opt.step()
        return record.unsettled()

    joint = JointCrossEntropy(model, bits or [None], cfg.label_smoothing, stack)
    net = distributed.wrap(joint, device)  # ``joint`` itself in a single process, which runs one_step instead

    def ddp_step(x: torch.Tensor, y: torch.Tensor) -> dict:
        opt.zero_grad(set_to_none=True)
        outputs = net(x, y)
        (sum(loss for loss, _ in outputs) / len(outputs)).backward()
        opt.step()
        values = {}
        for b, (loss, logits) in zip(joint.bits, outputs):
            key = "fp" if b is None else str(b)
            values[f"loss_{key}"] = loss.detach()
            values[f"acc_{key}"] = (logits.argmax(1) == y).float().mean()
        return distributed.mean_over_ranks(values)

    def device_step(*inputs: torch.Tensor, key) -> dict:   # a two-part step_fn's device part (capturable_step)
        opt.zero_grad(set_to_none=True)
        record = step_fn.compute(model, *inputs, key=key)
        opt.step()
        return record.unsettled()

    captured = CapturedStep(one_step if step_fn is None else device_step, opt, warmup=CAPTURE_WARMUP) if capture else None
    if stack or capture:
        log.info("%s: joint QAT stacked %s, step captured in a CUDA graph %s", meta.get("kind", "run"), stack, capture)
    observe(start)
    model.train()
    bar = tqdm(total=total, initial=start, desc=f"train {meta.get('kind', '')} {meta.get('model', '')}",
               disable=not (progress and writer), unit="step")
    t0 = time.perf_counter() - elapsed
    # passes per bit-width (issue 30, item 4); a stacked or captured step does not run the hooks it counts with
    counter = PassCounter(model, passes)
    counting = contextlib.nullcontext() if (stack or capture) else counter
    counting.__enter__()
    for step in range(start, total):
        x, y = map(distributed.shard, step_batch(images, labels, step, seed, cfg))
        x, y = x.to(device, memory_format=MEMORY_FORMAT), y.to(device)
        torch.manual_seed(seed * 1_000_003 + step)  # dropout
        lr = opt.param_groups[0]["lr"]
        record = StepRecord({"step": step, "lr": lr.clone() if isinstance(lr, torch.Tensor) else lr})
        if captured is not None and step_fn is not None:
            prepared = step_fn.prepare(model, x, y, step)
            record.extend(captured(*prepared.inputs, key=prepared.key))
        elif captured is not None:
            record.extend(captured(x, y))
        elif step_fn is not None:
            opt.zero_grad(set_to_none=True)
            record.extend(step_fn(model, x, y, step))
            opt.step()
        elif net is not joint:
            record.extend(ddp_step(x, y))
        else:
            record.extend(one_step(x, y))
        sched.step()
        counter.end_step()
        history.append(record)
        bar.update(1)
        if step % 10 == 0:  # the records are read here (one host sync per 10 steps), not inside the step
            settle_history(history)
            bar.set_postfix({k: f"{v:.3f}" for k, v in history[-1].items() if k.startswith("loss")})
        done = step + 1
        t_observe = monitor_s
        observe(done)
        t0 += monitor_s - t_observe  # the monitor's time is not training time
        if writer and done < total and (done % cfg.checkpoint_every == 0 or done == stop_after):
            settle_history(history)
            save_checkpoint(partial, model, meta, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            step=done, history=history, elapsed=time.perf_counter() - t0, monitor=curve,
                            monitor_s=monitor_s, passes=counter.table())
        if stop_after is not None and done >= stop_after and done < total:
            counting.__exit__(None, None, None)
            bar.close()
            settle_history(history)
            return {"history": history, "steps": done, "interrupted": True}
    counting.__exit__(None, None, None)
    bar.close()
    settle_history(history)
    wall = time.perf_counter() - t0
    result = {"history": history, "monitor": curve, "monitor_s": monitor_s, "steps": total, "wall_time_s": wall,
              "images_per_s": total * cfg.batch_size / max(wall, 1e-9),
              "passes": None if (stack or capture) else counter.table()}
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
