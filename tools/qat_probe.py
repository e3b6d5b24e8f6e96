#!/usr/bin/env python3
"""Issue 13 experiments (not a pipeline stage): what limits standard QAT at 4 bits, and which recipe lifts it.

    python tools/qat_probe.py accuracy [--checkpoint results/models/qat/resnet20.pt] [--test-images all]
    python tools/qat_probe.py diagnose [--checkpoint results/models/qat/resnet20.pt] [--bits 4]
    python tools/qat_probe.py train [--bits 32,8,5,4,2] [--lr 0.1] [--steps 800] [--seed 0]
                                    [--label-smoothing 0] [--kd-mix M --kd-temperature T] [--inplace-mix M]
                                    [--freeze-after F] [--fp-epochs E | --fp-checkpoint PATH]
                                    [--profile cpu] [--out /tmp/qat_probe.pt]

``accuracy`` prints a checkpoint's clean accuracy at each of its bit-widths with a 95 % Wilson interval, on the
profile's test split or, with ``--test-images N`` / ``all``, on N (all 10,000) CIFAR-10 test images drawn by the
same seeded, class-balanced rule: issue 13's accuracy targets with a narrower interval than the 2,000 images
of the ``cpu`` profile give.

``diagnose`` evaluates a switchable-precision checkpoint at ``--bits`` with one part of it moved to another
precision: weights at 32 bits (activations and BN at b), activations at 32 bits (weights and BN at b), then each
activation quantizer alone at 8 bits. Where the accuracy comes back tells which quantizer costs it.

``train`` is stage ``train_qat``'s recipe (the profile's ``train_qat`` and ``quant`` params, the committed FP
model, the same calibration and batches) with the changes asked for:

* ``--bits``: train only these bit-widths (the stage trains all of ``quant.bits`` jointly);
* ``--kd-mix M``: every bit-width learns from (1 − M) × cross-entropy + M × the soft cross-entropy to the frozen FP
  model's logits at temperature ``--kd-temperature`` (:func:`triqdef.stq.distillation.distillation_loss`, T²-scaled;
  Hinton et al. 2015, as QKD / Apprentice use it for low-bit networks);
* ``--inplace-mix M``: in-place distillation (Any-Precision DNNs, Yu et al. 2019): the 32-bit view learns from the
  labels, every lower bit-width from M × the soft cross-entropy to the detached 32-bit view (T = 1) + (1 − M) × CE;
* ``--freeze-after F``: after a share F of the steps, observers and BN running statistics stop updating
  (:func:`triqdef.quant.frozen_statistics`; BN still normalises with batch statistics in training mode);
* ``--fp-epochs E``: first train a new FP model for E epochs (stage ``train_fp``'s recipe) into a temporary folder
  and start from it; ``--fp-checkpoint PATH``: start from that FP model.

Prints one JSON line (clean accuracy per bit-width on the profile's test split, seconds); writes the checkpoint
to ``--out`` only, never into ``results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def _bits(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated bit-widths, e.g. 32,8,5,4,2") from None


def _number(low: float, high: float | None, closed_low: bool = True):
    """An argparse type: a float in [low, high] (or (low, high] with ``closed_low=False``; no upper bound if None)."""
    want = f"a number in [{low:g}, {high:g}]" if high is not None else f"a number > {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {want}") from None
        if (value < low if closed_low else value <= low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {want}")
        return value

    return parse


_share, _positive = _number(0.0, 1.0), _number(0.0, None, closed_low=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("accuracy", help="clean accuracy per bit-width with a 95 % Wilson interval")
    a.add_argument("--checkpoint", type=Path, default=ROOT / "results" / "models" / "qat" / "resnet20.pt")
    a.add_argument("--test-images", type=_count_or_all, default=None,
                   help="test images: a number or 'all' (default: the profile's data.test_size)")
    d = sub.add_parser("diagnose", help="which quantizer of a QAT checkpoint costs accuracy at one bit-width")
    d.add_argument("--checkpoint", type=Path, default=ROOT / "results" / "models" / "qat" / "resnet20.pt")
    d.add_argument("--bits", type=int, default=4)
    t = sub.add_parser("train", help="stage train_qat's recipe with one change; prints the accuracies")
    t.add_argument("--bits", type=_bits, default=None, help="bit-widths to train (default: quant.bits)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--label-smoothing", type=_share, default=None)
    t.add_argument("--kd-mix", type=_share, default=0.0, help="weight of the distillation term from the FP model")
    t.add_argument("--kd-temperature", type=_positive, default=4.0)
    t.add_argument("--inplace-mix", type=_share, default=0.0, help="weight of the distillation term from the 32-bit view")
    t.add_argument("--freeze-after", type=_share, default=None,
                   help="freeze observers and BN running statistics after this share of the steps")
    start = t.add_mutually_exclusive_group()
    start.add_argument("--fp-epochs", type=_positive, default=None, help="train a new FP model for this many epochs first")
    start.add_argument("--fp-checkpoint", type=Path, default=None, help="start from this FP checkpoint (default: stage "
                       "train_fp's)")
    t.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "qat_probe.pt")
    for p in (a, d, t):
        p.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    if args.command == "train" and args.kd_mix and args.inplace_mix:
        ap.error("--kd-mix and --inplace-mix: expected at most one distillation teacher")
    from triqdef.errors import TriqdefError

    try:
        return {"accuracy": _accuracy, "diagnose": _diagnose, "train": _train}[args.command](args)
    except TriqdefError as e:  # a wrong profile or bit-width, a missing or corrupt checkpoint, missing data
        print(f"qat_probe: error: {e}", file=sys.stderr)
        return 1


CIFAR10_TEST_IMAGES = 10_000


def _count_or_all(text: str) -> int:
    if text == "all":
        return CIFAR10_TEST_IMAGES
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 0 < n <= CIFAR10_TEST_IMAGES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of test images in 1..{CIFAR10_TEST_IMAGES} or 'all'")
    return n


def _accuracy(args: argparse.Namespace) -> int:
    from scipy.stats import binomtest

    from triqdef import quant
    from triqdef.config import load_config, override
    from triqdef.eval.accuracy import accuracy
    from triqdef.stages.common import load_data
    from triqdef.training.loop import model_from_checkpoint

    cfg = load_config(ROOT / "params.yaml", profile=args.profile)
    if args.test_images is not None:
        cfg = dataclasses.replace(cfg, data=override(cfg.data, {"test_size": args.test_images}, f"data.{args.profile}"))
    splits = load_data(cfg)
    model, meta = model_from_checkpoint(args.checkpoint)
    n = int(splits.test.labels.numel())
    is_fp = meta.get("kind") == "fp"
    rows = {}
    for b in [quant.FP_BITS] if is_fp else quant.model_bits(model):
        correct = round(accuracy(model, splits.test.images, splits.test.labels, bits=None if is_fp else b) * n)
        ci = binomtest(correct, n).proportion_ci(0.95, method="wilson")
        rows[str(b)] = {"accuracy": round(100 * correct / n, 2), "ci95": [round(100 * ci.low, 2), round(100 * ci.high, 2)]}
    print(json.dumps({"checkpoint": str(args.checkpoint), "n_test": n, "data": splits.source.get("source"),
                      "interval": "95 % Wilson score interval", "bits": rows}))
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from triqdef import quant
    from triqdef.config import load_config
    from triqdef.errors import TriqdefError
    from triqdef.eval.accuracy import accuracy
    from triqdef.stages.common import load_data
    from triqdef.training.loop import model_from_checkpoint

    cfg = load_config(ROOT / "params.yaml", profile=args.profile)
    splits = load_data(cfg)
    model, _ = model_from_checkpoint(args.checkpoint, kind="qat")
    b = args.bits
    if b == quant.FP_BITS or b not in quant.model_bits(model):
        raise TriqdefError(f"--bits {b}: expected one of the checkpoint's quantized bit-widths "
                           f"{[x for x in quant.model_bits(model) if x != quant.FP_BITS]}")
    high = 8 if 8 in quant.model_bits(model) else quant.FP_BITS
    weights = [m for m in model.modules() if isinstance(m, (quant.QuantConv2d, quant.QuantLinear))]
    relus = [(n, m) for n, m in model.named_modules() if isinstance(m, quant.QuantReLU)]

    def acc_with(weight_bits: int, act_bits: dict) -> float:
        quant.set_bitwidth(model, b)  # BN and every quantizer at b, then the changes
        for m in weights:
            m.active_bits = weight_bits
        for n, m in relus:
            m.active_bits = act_bits.get(n, b)
        return round(100 * accuracy(model, splits.test.images, splits.test.labels), 2)

    everything_fp = {n: quant.FP_BITS for n, _ in relus}
    report = {"checkpoint": str(args.checkpoint), "bits": b, "n_test": int(splits.test.labels.numel()),
              "accuracy": acc_with(b, {}), "weights_at_32": acc_with(quant.FP_BITS, {}),
              "activations_at_32": acc_with(b, everything_fp),
              f"one_activation_at_{high}": {n: acc_with(b, {n: high}) for n, _ in relus}}
    print(json.dumps(report, indent=1))
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from triqdef import quant
    from triqdef.config import load_config, override
    from triqdef.errors import TriqdefError
    from triqdef.eval.accuracy import accuracy
    from triqdef.stages.common import fp_checkpoint, load_data
    from triqdef.stages.train_fp import run_train_fp
    from triqdef.stq.distillation import distillation_loss
    from triqdef.training.loop import calibrate_all, fit, model_from_checkpoint

    cfg = load_config(ROOT / "params.yaml", profile=args.profile)
    changes = {k: v for k, v in {"lr": args.lr, "steps": args.steps, "label_smoothing": args.label_smoothing}.items()
               if v is not None}
    train, q = override(cfg.train_qat, changes, f"train_qat.{args.profile}"), cfg.quant
    seed = cfg.base.seed if args.seed is None else args.seed
    bits = list(args.bits or q.bits)
    unknown = [b for b in bits if b not in q.bits]
    if unknown:
        raise TriqdefError(f"--bits {unknown[0]}: expected bit-widths of quant.bits {list(q.bits)}")
    splits = load_data(cfg)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        record = {}
        if args.fp_epochs is not None:
            fp_cfg = dataclasses.replace(cfg, train_fp=override(cfg.train_fp, {"epochs": args.fp_epochs, "steps": None},
                                                                f"train_fp.{args.profile}"))
            fp = run_train_fp(fp_cfg, progress=True, root=Path(work), metrics_name=None)
            record["fp"] = {"epochs": args.fp_epochs, "accuracy": round(100 * fp["test_accuracy"], 2),
                            "seconds": round(fp["stage_wall_time_s"])}
            fp_path = fp_checkpoint(cfg, Path(work))
        else:
            fp_path = args.fp_checkpoint or fp_checkpoint(cfg)
        fp_model, _ = model_from_checkpoint(fp_path, kind="fp", model_name=cfg.model.name)
        teacher = _frozen_copy(fp_model) if args.kd_mix else None
        model = quant.quantize_model(fp_model, bits, q.first_last_bits, q.averaging_constant, q.activation_range)
        calibrate_all(model, splits.holdout.images, train.batch_size)
        top = max(bits)

        freeze_at = None if args.freeze_after is None else int(args.freeze_after * train.total_steps(len(splits.train.images)))
        frozen = contextlib.ExitStack()  # holds quant.frozen_statistics from step freeze_at to the end of training

        def step(m, x, y, k):
            if k == freeze_at:
                frozen.enter_context(quant.frozen_statistics(m))
            losses = {}
            teacher_logits = None
            top_logits = None  # set by the top bit-width, which the loop visits first
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            for b in sorted(bits, reverse=True):  # the 32-bit view first: in-place distillation's teacher
                with quant.use_bitwidth(m, b):
                    logits = m(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=train.label_smoothing)
                    if teacher is not None:
                        soft = distillation_loss(logits, teacher_logits, args.kd_temperature, t_squared=True)
                        loss = (1 - args.kd_mix) * loss + args.kd_mix * soft
                    elif args.inplace_mix and b != top:
                        loss = (1 - args.inplace_mix) * loss + args.inplace_mix * distillation_loss(logits, top_logits, 1.0)
                    (loss / len(bits)).backward()
                if b == top:
                    top_logits = logits.detach()
                losses[f"loss_{b}"] = loss.item()
            return losses

        with frozen:
            fit(model, splits.train.images, splits.train.labels, train, seed=seed, out_path=args.out,
                meta={"kind": "qat-probe", "model": cfg.model.name}, work_dir=Path(work), bits=bits, progress=True,
                step_fn=step)
    accs = {b: round(100 * accuracy(model, splits.test.images, splits.test.labels, bits=b), 2) for b in bits}
    print(json.dumps({"bits": bits, "lr": train.lr, "steps": train.total_steps(splits.train.images.shape[0]),
                      "seed": seed, "label_smoothing": train.label_smoothing, "kd_mix": args.kd_mix,
                      "kd_temperature": args.kd_temperature if args.kd_mix else None, "inplace_mix": args.inplace_mix,
                      "freeze_after": args.freeze_after,
                      **record, "test_accuracy_percent": accs, "n_test": int(splits.test.labels.numel()),
                      "seconds": round(time.time() - t0)}))
    return 0


def _frozen_copy(fp_model):
    """A copy of the FP model as a frozen teacher (eval mode, no gradients)."""
    import copy

    teacher = copy.deepcopy(fp_model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


if __name__ == "__main__":
    sys.exit(main())
