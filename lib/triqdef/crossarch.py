"""Stage ``cross_arch``: the second CIFAR architecture of Table 8 (paper appendix A.1).

Table 8 transfers patches across architectures and bit-widths. This stage
trains the second architecture (``cross_arch.model``, ResNet-56 by default:
of the paper's Table 8 models the cheapest after ResNet-20) with the same
recipes as ResNet-20, scaled by the ``cross_arch`` params (FP epochs, QAT
steps, bit-widths), and makes its LAVAN / GAP 6×6 patches on its FP model.
Everything lands in ``results/cross_arch/`` (``fp/``, ``qat/``,
``patches.pt``); notebook 01 evaluates both directions.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import paths, pipeline
from .attacks import ATTACKS
from .config import require_fraction, require_positive_int, section
from .meta import provenance, write_json
from .patchsets import PatchSpec, make_patches, save_patchset
from .train import model_from_checkpoint, resolve_device

log = logging.getLogger("triqdef.crossarch")

SEED_OFFSET = 50_000  # patch seeds of this stage never coincide with the main patch sets'


def output_root() -> Path:
    return paths.results_dir() / "cross_arch"


def patch_file() -> Path:
    return output_root() / "patches.pt"


def cross_arch_params(params: dict) -> dict:
    """The main params with the model, FP / QAT recipes and bit-widths replaced by the ``cross_arch`` section's."""
    cfg = section(params, "cross_arch")
    p = copy.deepcopy(params)
    p["model"] = dict(section(params, "model"), name=cfg.get("model"))
    pipeline.model_name(p)  # validates the name
    p["train_fp"] = dict(section(params, "train_fp"), **(cfg.get("train_fp") or {}))
    p["train_qat"] = dict(section(params, "train_qat"), **(cfg.get("train_qat") or {}))
    p["quant"] = dict(section(params, "quant"), bits=cfg.get("bits"))
    pipeline.quant_settings(p)  # validates the bit-widths
    return p


def patch_specs(params: dict) -> list[PatchSpec]:
    """``patches_per_attack`` FP-made patches per attack, 6×6 (``patches.size``), inside the training region."""
    cfg = section(params, "cross_arch")
    attacks = section(params, "patches").get("attacks", list(ATTACKS))
    n = require_positive_int(cfg.get("patches_per_attack"), "cross_arch.patches_per_attack")
    size = section(params, "patches").get("size", 6)
    seed = params["base"]["seed"]
    specs, k = [], 0
    for attack in attacks:
        for i in range(n):
            specs.append(PatchSpec("cross_arch", attack, size, "fp", None, (3 * k + 1) % 10, seed * 100_003 + SEED_OFFSET + k, "inside"))
            k += 1
    return specs


def run_cross_arch(params: dict, progress: bool = True) -> dict:
    """Train the second architecture (FP, then multi-bit QAT) and make its patches; metrics to ``cross_arch.json``."""
    t_stage = time.perf_counter()
    cfg = section(params, "cross_arch")
    min_acc = require_fraction(cfg.get("min_accuracy", 0.75), "cross_arch.min_accuracy")
    p = cross_arch_params(params)
    specs = patch_specs(params)  # validate before training
    root = output_root()
    fp_m = pipeline.run_train_fp(p, progress, root=root, metrics_name=None)
    if fp_m["test_accuracy"] < min_acc:
        log.warning("%s FP reaches %.1f%% < %.0f%% (cross_arch.min_accuracy): Table 8 reports it as such",
                    fp_m["model"], 100 * fp_m["test_accuracy"], 100 * min_acc)
    qat_m = pipeline.run_train_qat(p, progress=progress, root=root, metrics_name=None)

    t0 = time.perf_counter()
    device = resolve_device(params["base"].get("device", "auto"))
    splits = pipeline.load_data(params)
    pcfg = section(params, "patches")
    n_att = require_positive_int(pcfg["attack_images"], "patches.attack_images")
    rng = np.random.default_rng([params["base"]["seed"], 7])  # the same attacker images as the main patch sets
    idx = torch.from_numpy(rng.choice(len(splits.train.labels), size=min(n_att, len(splits.train.labels)), replace=False))
    name = pipeline.model_name(p)
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(p, root), kind="fp", model_name=name)
    patches, seconds = make_patches(specs, {"fp": fp.to(device)}, splits.train.images[idx], splits.train.labels[idx],
                                    pcfg, name, progress)
    save_patchset(patch_file(), patches, provenance(params, {"params": {**pcfg, **cfg}, "data": pipeline.data_record(splits),
                                                             "attack_images": int(len(idx)), "fp_checkpoint_commit": fp_meta.get("commit")}))
    patch_s = time.perf_counter() - t0
    metrics = {"model": name, "fp": fp_m, "qat": qat_m, "min_accuracy": min_acc,
               "reaches_min_accuracy": fp_m["test_accuracy"] >= min_acc, "n_patches": len(patches),
               "patch_wall_time_s": round(patch_s, 1), "seconds_per_patch_mean": round(float(np.mean(seconds)), 2),
               "profile": params["base"]["profile"], "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    write_json(paths.metrics_dir() / "cross_arch.json", metrics)
    return metrics


def load_models(params: dict) -> dict:
    """The second architecture's FP and QAT models with their metadata, and its patches."""
    from .patchsets import load_patchset

    p = cross_arch_params(params)
    name, root = pipeline.model_name(p), output_root()
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(p, root), kind="fp", model_name=name)
    qat, qat_meta = model_from_checkpoint(pipeline.qat_checkpoint(p, root=root), kind="qat", model_name=name)
    patches, patch_meta = load_patchset(patch_file())
    return {"name": name, "fp": fp, "fp_meta": fp_meta, "qat": qat, "qat_meta": qat_meta,
            "patches": patches, "patch_meta": patch_meta}


def table8_records(directions: list[dict], images: torch.Tensor, labels: torch.Tensor):
    """Transfer records of Table 8, one block per direction.

    Each direction is ``{"source", "patches", "target", "fp", "qat", "bits"}``:
    the source model's patches evaluated on the target's FP model (column
    ``FP``) and on its multi-bit QAT model at each of ``bits`` (``qat`` may be
    ``None`` with ``bits=[]``: FP column only, e.g. the white-box reference).
    Returns the records and the ASR table (mean over patches, image counts beside).
    """
    import pandas as pd

    from .transfer import pivot_rates, transfer_records

    frames, columns = [], ["FP"]
    for d in directions:
        views = {"FP": (d["fp"], None)}
        views.update({f"{b}-bit": (d["qat"], b) for b in d["bits"]})
        columns += [c for c in views if c not in columns]
        frames.append(transfer_records(d["patches"], views, images, labels).assign(source=d["source"], target=d["target"]))
    records = pd.concat(frames, ignore_index=True)
    return records, pivot_rates(records, "asr", index=("source", "target", "attack"), column_order=columns)
