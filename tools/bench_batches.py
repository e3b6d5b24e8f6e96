"""Which batch sizes make evaluation and patch optimisation fastest on this machine? (issue 30's budget)

Times, in alternating rounds (so that a drift of the machine's speed hits every setting alike), on the committed
checkpoints of the profile:

* ``predict`` (every patch table's evaluation: :func:`triqdef.eval.accuracy.predict`) of the standard-QAT ResNet-20 at
  32, 4 and 2 bits on ``--images`` test images, at each ``--eval-batches`` size; and checks that every size predicts
  the same labels as the pipeline's (500);
* :func:`triqdef.attacks.universal.optimise_patches` (every patch set, LAVAN, the FP model, the matched 12-px size) at
  each ``--max-batches`` value of ``patches.max_batch``.

Prints each setting's median against the pipeline's current one, and writes the measurements as JSON (``--out``).
Measures only: the pipeline's settings stay as they are (changing them stales every stage).

    python tools/bench_batches.py --rounds 3 --out results/bench/batches_resnet20.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median over them)")
    ap.add_argument("--images", type=int, default=1000, help="test images each predict() call classifies")
    ap.add_argument("--eval-batches", type=int, nargs="+", default=[500, 250, 128, 64])
    ap.add_argument("--max-batches", type=int, nargs="+", default=[256, 128, 64])
    ap.add_argument("--patches", type=int, default=8, help="patches optimised together per timing")
    ap.add_argument("--steps", type=int, default=10, help="optimiser steps per timing")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    for name in ("rounds", "images", "patches", "steps"):
        if getattr(args, name) < 1:
            sys.exit(f"bench_batches: error: --{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    if min(args.eval_batches + args.max_batches) < 1:
        sys.exit("bench_batches: error: batch sizes: expected positive integers")

    import torch

    from triqdef.attacks.patchsets import attack_images, optimiser
    from triqdef.attacks.universal import PatchRequest, optimise_patches
    from triqdef.config import load_config
    from triqdef.eval.accuracy import predict
    from triqdef.stages import common
    from triqdef.training.loop import model_from_checkpoint

    cfg = load_config(None, args.profile)
    qat, _ = model_from_checkpoint(common.qat_checkpoint(cfg), kind="qat")
    fp, _ = model_from_checkpoint(common.fp_checkpoint(cfg), kind="fp")
    splits = common.load_data(cfg)
    x = splits.test.images[: args.images].float() / 255
    images, labels, _ = attack_images(splits, cfg.patches, cfg.base.seed)
    attack_x = images.float() / 255
    requests = [PatchRequest(t % 10, 1_000 + t, cfg.patches.border) for t in range(args.patches)]
    bits_list = (32, 4, 2)
    reference = {b: predict(qat, x, b, 500) for b in bits_list}
    same = {bs: all(bool((predict(qat, x, b, bs) == reference[b]).all()) for b in bits_list) for bs in args.eval_batches}

    evals: dict[tuple[int, int], list[float]] = {}
    steps: dict[int, list[float]] = {}
    for r in range(args.rounds):
        for bits in bits_list:
            for bs in args.eval_batches:
                t0 = time.perf_counter()
                predict(qat, x, bits, bs)
                evals.setdefault((bits, bs), []).append(1_000 * (time.perf_counter() - t0) / args.images)
        for mb in args.max_batches:
            opt = dataclasses.replace(optimiser(cfg.patches, "lavan", steps=args.steps), max_batch=mb)
            t0 = time.perf_counter()
            optimise_patches(fp, attack_x, labels, 12, requests, opt)
            steps.setdefault(mb, []).append(1_000 * (time.perf_counter() - t0) / (args.patches * args.steps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    base_eval, base_mb = 500, cfg.patches.max_batch
    out = {"profile": args.profile, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": args.rounds,
           "predict_ms_per_image": {f"{b} bits, batch {bs}": statistics.median(v) for (b, bs), v in evals.items()},
           "predict_same_labels_as_batch_500": {str(k): v for k, v in same.items()},
           "optimise_ms_per_patch_step": {f"max_batch {mb}": statistics.median(v) for mb, v in steps.items()},
           "pipeline_settings": {"predict batch": base_eval, "patches.max_batch": base_mb}}
    for (bits, bs), v in sorted(evals.items()):
        ratio = statistics.median(evals[(bits, base_eval)]) / statistics.median(v) if (bits, base_eval) in evals else float("nan")
        print(f"predict {bits:>2} bits, batch {bs:>4}: {statistics.median(v):.3f} ms/image, {ratio:.2f}x the batch-{base_eval} "
              f"speed; same labels: {same[bs]}")
    for mb, v in sorted(steps.items()):
        ratio = statistics.median(steps[base_mb]) / statistics.median(v) if base_mb in steps else float("nan")
        print(f"optimise_patches max_batch {mb:>4}: {statistics.median(v):.1f} ms per patch-step, {ratio:.2f}x max_batch {base_mb}'s speed")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
