"""Stage ``train_qat``: standard multi-bit QAT from the FP weights."""

from __future__ import annotations

import logging
import dataclasses
import time
from pathlib import Path

from triqdef import paths, quant
from triqdef.config import Config, QATParams, StageConfig, as_dict
from triqdef.eval.accuracy import accuracy
from triqdef.meta import provenance, write_curve, write_metrics
from triqdef.stages.common import data_record, fp_checkpoint, load_data, qat_checkpoint, work_dir
from triqdef.training import distributed
from triqdef.training.loop import calibrate_all, fit, model_from_checkpoint, training_device

PARAMS = ("base", "data", "model", "quant", "train_qat")
INDEPENDENT_SEED_OFFSET = 1_000  # the independent model's seed: base.seed + this (data order, augmentation)

log = logging.getLogger(__name__)


def shortened(train: QATParams, share: float) -> QATParams:
    """``train`` with ``share`` of its steps (at least one) or, where it counts epochs, of its epochs."""
    if train.steps is not None:
        return dataclasses.replace(train, steps=max(1, round(train.steps * share)))
    return dataclasses.replace(train, epochs=train.epochs * share)


def run_train_qat(cfg: Config | StageConfig, all_layers: bool = False, progress: bool = True, root: Path | None = None,
                  metrics_name: str | None = "train_qat", independent: bool = False) -> dict:
    """Stage ``train_qat``: standard multi-bit QAT on one shared backbone, fine-tuned from the FP weights.

    Each bit-width's BN starts as a copy of the FP BN; observers and BN
    statistics of every bit-width are calibrated on the held-out split first.
    ``all_layers=True`` quantizes the first and last layer at ``b`` too.
    ``root`` / ``metrics_name`` as in :func:`triqdef.stages.train_fp.run_train_fp`. ``independent=True``
    trains the same recipe with seed ``base.seed + INDEPENDENT_SEED_OFFSET`` into its own checkpoint: the
    source of the unseen-bit-width patches, independent of the defenses' starting checkpoint, for
    ``train_qat.independent_share`` of the run's steps (or epochs; the schedule spans the shorter run).
    """
    t_stage = time.perf_counter()
    train, q = cfg.train_qat, cfg.quant
    if independent and train.independent_share < 1:
        train = shortened(train, train.independent_share)
    flb = None if all_layers else q.first_last_bits
    name, seed = cfg.model.name, cfg.base.seed + (INDEPENDENT_SEED_OFFSET if independent else 0)
    device = training_device(cfg.base)
    splits = load_data(cfg)
    fp_path = fp_checkpoint(cfg, root)
    fp_model, fp_meta = model_from_checkpoint(fp_path, kind="fp", model_name=name)
    model = quant.quantize_model(fp_model, q.bits, flb, q.averaging_constant, q.activation_range).to(device)
    t0 = time.perf_counter()
    calibrate_all(model, splits.holdout.images, train.batch_size, device=device)
    calib_s = time.perf_counter() - t0
    meta = provenance(cfg, {"kind": "qat", "model": name, "bits": list(q.bits), "first_last_bits": flb,
                            "range_estimator": q.activation_range, "averaging_constant": q.averaging_constant,
                            "params": as_dict(train), "quant": as_dict(q), "data": data_record(splits),
                            "init": {"checkpoint": str(fp_path.relative_to(paths.output_root())), "commit": fp_meta.get("commit")},
                            "num_classes": 10, "seed": seed, "independent": independent})
    out = qat_checkpoint(cfg, all_layers, root, independent)
    res = fit(model, splits.train.images, splits.train.labels, train, seed=seed, out_path=out, meta=meta,
              work_dir=work_dir(), bits=list(q.bits), device=device, progress=progress,
              stacked=cfg.base.stacked, capture=cfg.base.compile)
    accs = {str(b): accuracy(model, splits.test.images, splits.test.labels, bits=b) for b in q.bits}
    metrics = {"model": name, "first_last_bits": flb, "test_accuracy": accs, "n_test": int(splits.test.labels.numel()),
               "steps": res["steps"], "wall_time_s": res["wall_time_s"], "calibration_s": calib_s,
               "train_images_per_s": res["images_per_s"], "data": data_record(splits), "profile": cfg.base.profile,
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    if metrics_name and distributed.is_writer():  # headline numbers for `dvc metrics`; record and provenance beside
        file = f"{metrics_name}{'_all_layers' if all_layers else '_independent' if independent else ''}"
        write_metrics(file, {**{f"acc_{b}bit": a for b, a in accs.items()}, "n_test": metrics["n_test"],
                             "steps": res["steps"], "stage_wall_time_s": metrics["stage_wall_time_s"]},
                      provenance(cfg, metrics))
        if not all_layers and not independent:  # the curve the training-curves figure shows (others: in their checkpoints)
            write_curve(file, res["history"])
    log.info("QAT %s (first/last %s): %s", name, flb, {b: f"{100 * a:.1f}%" for b, a in accs.items()})
    return metrics
