#!/usr/bin/env python3
"""Issue 13 experiment (not a pipeline stage): can in-place distillation lift standard QAT to 84 % at 4 bits?

    python tools/qat_inplace_distillation.py --mix 0.5 [--profile cpu] [--out /tmp/qat_ipd.pt]

Stage ``train_qat``'s recipe (the profile's ``train_qat`` and ``quant`` params, the committed FP model, the same
calibration, seed and batches) with one change to the step, after Any-Precision DNNs (Yu et al. 2019): the 32-bit
view learns from the labels; every lower bit-width learns from ``mix`` × the soft cross-entropy to the detached
32-bit softmax (:func:`triqdef.stq.distillation.distillation_loss` at T = 1; the KL's gradient) + (1 − ``mix``) ×
cross-entropy. Prints the clean accuracy at each bit-width on the profile's test split (JSON);
writes the checkpoint to ``--out`` only (never into ``results/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mix", type=float, default=0.5, help="weight of the distillation term for the lower bit-widths")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "qat_ipd.pt")
    args = ap.parse_args(argv)
    if not 0.0 <= args.mix <= 1.0:
        print(f"qat_inplace_distillation: error: --mix {args.mix}: expected a number in [0, 1]", file=sys.stderr)
        return 2
    from triqdef.errors import TriqdefError

    try:
        return _run(args)
    except TriqdefError as e:  # a wrong profile, a missing or corrupt FP checkpoint, missing data
        print(f"qat_inplace_distillation: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch.nn.functional as F

    from triqdef import quant
    from triqdef.config import load_config
    from triqdef.eval.accuracy import accuracy
    from triqdef.stages.common import fp_checkpoint, load_data
    from triqdef.stq.distillation import distillation_loss
    from triqdef.training.loop import calibrate_all, fit, model_from_checkpoint

    cfg = load_config(ROOT / "params.yaml", profile=args.profile)
    train, q = cfg.train_qat, cfg.quant
    splits = load_data(cfg)
    fp_model, _ = model_from_checkpoint(fp_checkpoint(cfg), kind="fp", model_name=cfg.model.name)
    model = quant.quantize_model(fp_model, q.bits, q.first_last_bits, q.averaging_constant, q.activation_range)
    calibrate_all(model, splits.holdout.images, train.batch_size)
    bits = list(q.bits)
    teacher_bits = max(bits)

    def step(m, x, y, _step):
        with quant.use_bitwidth(m, teacher_bits):
            teacher_logits = m(x)
            loss = F.cross_entropy(teacher_logits, y)
            (loss / len(bits)).backward()
        record = {f"loss_{teacher_bits}": loss.item()}
        for b in bits:
            if b == teacher_bits:
                continue
            with quant.use_bitwidth(m, b):
                logits = m(x)
                soft = distillation_loss(logits, teacher_logits, 1.0)  # teacher detached inside
                loss = args.mix * soft + (1 - args.mix) * F.cross_entropy(logits, y)
                (loss / len(bits)).backward()
            record[f"loss_{b}"] = loss.item()
        return record

    t = time.time()
    with tempfile.TemporaryDirectory() as work:
        fit(model, splits.train.images, splits.train.labels, train, seed=cfg.base.seed, out_path=args.out,
            meta={"kind": "qat-inplace-distillation", "model": cfg.model.name}, work_dir=Path(work), bits=bits,
            progress=True, step_fn=step)
    accs = {b: round(100 * accuracy(model, splits.test.images, splits.test.labels, bits=b), 2) for b in bits}
    print(json.dumps({"mix": args.mix, "test_accuracy_percent": accs, "n_test": int(splits.test.labels.numel()),
                      "steps": train.total_steps(splits.train.images.shape[0]), "seconds": round(time.time() - t)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
