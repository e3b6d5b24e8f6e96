#!/usr/bin/env python3
"""Our LAVAN against a reference implementation: ART's ``AdversarialPatchPyTorch`` (issue 12, acceptance).

    python tools/compare_art.py --profile cpu --size 6 [--out results/reference/art_lavan_6px.json]

Same model (the pipeline's FP checkpoint), same patch size, same targets (one patch per class), the same
optimisation budget (``patches.steps`` steps × ``patches.images_per_patch`` images per step, from the same
attacker images), and the same evaluation: each patch pasted at the same stored location on the same test
images, targeted ASR as docs/design.md#success-rate defines it, with a 95 % bootstrap interval over images and
patches and the paired difference ours − ART.

ART's attack is given the square patch of the same size (``scale_min = scale_max = size / 32``, no rotation,
no perspective), at random locations over the image (its own placement), and is run with its two optimisers
(``pgd``: signed steps with the step size of ``patches.step_size``; ``Adam`` with learning rates 0.01, 0.05
and 0.1, or the pairs of ``--art-configs``); the comparison is against ART's best. Its ``max_iter`` counts epochs over the images it is given,
so it is given exactly ``steps × images_per_patch`` images (drawn with replacement) for one epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from triqdef.attacks.patches import Patch  # noqa: E402
from triqdef.attacks.patchsets import attack_images, optimiser  # noqa: E402
from triqdef.attacks.universal import PatchRequest, optimise_patches  # noqa: E402
from triqdef.config import load_config  # noqa: E402
from triqdef.data.cifar import to_float  # noqa: E402
from triqdef.errors import TriqdefError  # noqa: E402
from triqdef.eval.intervals import bootstrap_rate, paired_difference  # noqa: E402
from triqdef.eval.transfer import patch_outcomes  # noqa: E402
from triqdef.meta import provenance, write_json  # noqa: E402
from triqdef.stages import common as pipeline  # noqa: E402
from triqdef.training.loop import model_from_checkpoint  # noqa: E402


def art_patch(model, x, targets_onehot, size, steps, batch, optimizer, lr, seed):
    """One ART targeted square patch (3, size, size) in [0, 1]."""
    from art.attacks.evasion import AdversarialPatchPyTorch
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(seed)
    np.random.seed(seed)
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = AdversarialPatchPyTorch(clf, rotation_max=0.0, scale_min=size / 32, scale_max=size / 32,
                                     distortion_scale_max=0.0, learning_rate=lr, max_iter=1, batch_size=batch,
                                     patch_shape=(3, size, size), patch_type="square", optimizer=optimizer,
                                     targeted=True, verbose=False)
    patch, _ = attack.generate(x=x, y=targets_onehot)
    return torch.from_numpy(np.asarray(patch)).float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="patch size (default: patches.size)")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--art-configs", default="pgd:default,Adam:0.01,Adam:0.05,Adam:0.1",
                    help="ART optimiser:learning-rate pairs to try (pgd:default = patches.step_size)")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("art") is None:
        print("compare_art: error: the Adversarial Robustness Toolbox is not installed: expected `pip install -e .` (a core dependency since notebook 05)",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(None, args.profile)
        pcfg, seed = cfg.patches, cfg.base.seed
        size = args.size or pcfg.size
        splits = pipeline.load_data(cfg)
        images, labels, _ = attack_images(splits, pcfg, seed)
        x_att = to_float(images)
        fp, _ = model_from_checkpoint(pipeline.fp_checkpoint(cfg), kind="fp", model_name=cfg.model.name)
    except TriqdefError as e:
        print(f"compare_art: error: {e}", file=sys.stderr)
        return 2
    fp.eval()
    x_test, y_test = to_float(splits.test.images[:args.test_images]), splits.test.labels[:args.test_images]
    with torch.no_grad():
        clean = fp(x_test).argmax(1)
    targets = list(range(args.targets))
    requests = [PatchRequest(t, seed * 100_003 + 80_000 + t, pcfg.border) for t in targets]
    t0 = time.perf_counter()
    ours = optimise_patches(fp, x_att, labels, size, requests, optimiser(pcfg, "lavan"), source_model=cfg.model.name,
                            progress="ours")
    seconds = {"ours": round(time.perf_counter() - t0, 1)}
    locations = [p.location for p in ours]
    budget = pcfg.steps * pcfg.images_per_patch
    results = {"ours": patch_outcomes(ours, fp, None, x_test, y_test, clean)[0]}
    print("ours", bootstrap_rate(results["ours"]).percent(), f"{seconds['ours']} s", flush=True)
    configs = []
    for item in args.art_configs.split(","):
        optimizer, _, lr = item.partition(":")
        if optimizer not in ("pgd", "Adam"):
            print(f"compare_art: error: ART optimiser {optimizer!r}: expected pgd or Adam", file=sys.stderr)
            return 2
        configs.append((optimizer, pcfg.step_size if lr == "default" else float(lr)))
    for optimizer, lr in configs:
        key = f"art_{optimizer.lower()}_lr{lr:g}"
        t0 = time.perf_counter()
        made = []
        for t, loc in zip(targets, locations):
            rng = np.random.default_rng([seed, 80, t])
            pick = rng.integers(0, len(labels), budget)
            onehot = np.eye(10, dtype=np.float32)[[t] * budget]
            content = art_patch(fp, x_att[pick].numpy(), onehot, size, pcfg.steps, pcfg.images_per_patch, optimizer,
                                lr, seed * 1_000 + t)
            made.append(Patch(content, loc, t, "art", cfg.model.name, None, {"optimizer": optimizer, "lr": lr}))
        seconds[key] = round(time.perf_counter() - t0, 1)
        results[key] = patch_outcomes(made, fp, None, x_test, y_test, clean)[0]
        print(key, bootstrap_rate(results[key]).percent(), f"{seconds[key]} s", flush=True)
    rates = {k: bootstrap_rate(v, seed=seed) for k, v in results.items()}
    best = max((k for k in rates if k != "ours"), key=lambda k: rates[k].value)
    diff = paired_difference(results["ours"], results[best], seed=seed)
    record = {"size": size, "targets": targets, "steps": pcfg.steps, "images_per_patch": pcfg.images_per_patch,
              "n_test": int(len(y_test)), "seconds": seconds, "best_art": best,
              "rates": {k: v.as_dict() for k, v in rates.items()}, "ours_minus_best_art": diff.as_dict(),
              # at least as strong: ART's best is not significantly stronger (the interval of ours − ART reaches 0)
              "ours_at_least_as_strong": bool(diff.high >= 0), "ours_significantly_stronger": bool(diff.low > 0)}
    for k, v in rates.items():
        print(f"{k:>22}: ASR {v.percent()} % ({v.n_images} images, {v.n_patches} patches)")
    print(f"ours − {best}: {100 * diff.value:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] points")
    if args.out:
        write_json(args.out, provenance(cfg, record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
