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

import logging
import time
from pathlib import Path

import numpy as np
import torch

from triqdef import paths
from triqdef.stages import attack_strength
from triqdef.stages import common as pipeline
from triqdef.stages.train_fp import run_train_fp
from triqdef.stages.train_qat import run_train_qat
from triqdef.config import Config, StageConfig, as_dict, override
from triqdef.meta import provenance, write_metrics
from triqdef.attacks.patchsets import (MATCHED, PAPER, PatchSpec, attack_images, balanced_targets, make_patches, regime_set,
                                      regime_sizes, save_patchset)
from triqdef.training.loop import model_from_checkpoint, resolve_device

PARAMS = ("base", "data", "model", "quant", "train_fp", "train_qat", "patches", "cross_arch", "regimes")

log = logging.getLogger(__name__)

SEED_OFFSET = 50_000  # patch seeds of this stage never coincide with the main patch sets'


def output_root() -> Path:
    return paths.results_dir() / "cross_arch"


def patch_file() -> Path:
    return output_root() / "patches.pt"


def cross_arch_params(cfg: Config | StageConfig) -> Config | StageConfig:
    """The config with the model, FP / QAT recipes and bit-widths replaced by the ``cross_arch`` section's (checked)."""
    xa = cfg.cross_arch
    return cfg.replace(model=override(cfg.model, {"name": xa.model}, "cross_arch.model"),
                       train_fp=override(cfg.train_fp, xa.train_fp, "cross_arch.train_fp"),
                       train_qat=override(cfg.train_qat, xa.train_qat, "cross_arch.train_qat"),
                       quant=override(cfg.quant, {"bits": list(xa.bits)}, "cross_arch.bits"))


def patch_specs(cfg: Config | StageConfig, second_size: int | None = None) -> list[PatchSpec]:
    """``patches_per_attack`` FP-made patches per attack (targets balanced over the classes), inside the training
    region, at ``patches.size`` (set ``cross_arch``) and, when given, at ``second_size`` (``cross_arch_matched``).
    With ``regimes.evaluate: deciding`` only the deciding regime's (the matched size when given): notebook 01 and the
    appendix evaluate no other (:func:`triqdef.stages.regimes.not_evaluated`)."""
    seed = cfg.base.seed
    specs: list[PatchSpec] = []
    regimes = regime_sizes(cfg.patches, second_size)
    deciding = MATCHED if MATCHED in regimes else PAPER
    for r, (regime, sizes) in enumerate(regimes.items()):
        if cfg.regimes.evaluate == "deciding" and regime != deciding:
            continue
        for a, attack in enumerate(cfg.patches.attacks):
            targets = balanced_targets(cfg.cross_arch.patches_per_attack, seed * 1_000 + SEED_OFFSET // 1_000 + 10 * r + a)
            for t in targets:
                specs.append(PatchSpec(regime_set("cross_arch", regime), attack, sizes["size"], "fp", None, t,
                                       seed * 100_003 + SEED_OFFSET + len(specs), "inside", regime))
    return specs


def run_cross_arch(cfg: Config | StageConfig, progress: bool = True) -> dict:
    """Train the second architecture (FP, then multi-bit QAT) and make its patches; metrics to ``cross_arch.json``."""
    t_stage = time.perf_counter()
    min_acc = cfg.cross_arch.min_accuracy
    p = cross_arch_params(cfg)
    second, _ = attack_strength.second_size()
    specs = patch_specs(cfg, second)
    root = output_root()
    fp_m = run_train_fp(p, progress, root=root, metrics_name=None)
    if fp_m["test_accuracy"] < min_acc:
        log.warning("%s FP reaches %.1f%% < %.0f%% (cross_arch.min_accuracy): Table 8 reports it as such",
                    fp_m["model"], 100 * fp_m["test_accuracy"], 100 * min_acc)
    qat_m = run_train_qat(p, progress=progress, root=root, metrics_name=None)

    t0 = time.perf_counter()
    device = resolve_device(cfg.base.device)
    splits = pipeline.load_data(cfg)
    pcfg = cfg.patches
    images, labels, idx = attack_images(splits, pcfg, cfg.base.seed)  # the same attacker images as the main patch sets
    name = p.model.name
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(p, root), kind="fp", model_name=name)
    patches, seconds = make_patches(specs, {"fp": fp.to(device)}, images, labels, pcfg, name, progress)
    save_patchset(patch_file(), patches, provenance(cfg, {"params": {**as_dict(pcfg), **as_dict(cfg.cross_arch)}, "data": pipeline.data_record(splits),
                                                             "attack_images": int(len(idx)), "fp_checkpoint_commit": fp_meta.get("commit")}))
    patch_s = time.perf_counter() - t0
    metrics = {"model": name, "fp": fp_m, "qat": qat_m, "min_accuracy": min_acc,
               "reaches_min_accuracy": fp_m["test_accuracy"] >= min_acc, "n_patches": len(patches),
               "patch_wall_time_s": round(patch_s, 1), "seconds_per_patch_mean": round(float(np.mean(seconds)), 2),
               "profile": cfg.base.profile, "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    headline = {"acc_fp": fp_m["test_accuracy"], **{f"acc_{b}bit": a for b, a in qat_m["test_accuracy"].items()},
                "n_test": fp_m["n_test"], "n_patches": len(patches), "stage_wall_time_s": metrics["stage_wall_time_s"]}
    write_metrics("cross_arch", headline, provenance(cfg, metrics))  # the second model's FP / QAT accuracy
    return metrics


def load_models(cfg: Config | StageConfig) -> dict:
    """The second architecture's FP and QAT models with their metadata, and its patches."""
    from triqdef.attacks.patchsets import load_patchset

    p = cross_arch_params(cfg)
    name, root = p.model.name, output_root()
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
    Returns the records (the target model in column ``target_model``) and the ASR table (mean over patches, image
    counts beside; the target model in column ``target``).
    """
    import pandas as pd

    from triqdef.eval.transfer import pivot_rates, transfer_records

    frames, columns = [], ["FP"]
    for d in directions:
        views = {"FP": (d["fp"], None)}
        views.update({f"{b}-bit": (d["qat"], b) for b in d["bits"]})
        columns += [c for c in views if c not in columns]
        frames.append(transfer_records(d["patches"], views, images, labels).assign(source=d["source"],
                                                                                   target_model=d["target"]))
    records = pd.concat(frames, ignore_index=True)   # column "target" stays each patch's target class
    table = pivot_rates(records, "asr", index=("source", "target_model", "attack"), column_order=columns)
    return records, table.rename(columns={"target_model": "target"})
