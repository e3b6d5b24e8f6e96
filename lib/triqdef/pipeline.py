"""The pipeline's library stages (called by the ``triqdef`` CLI from ``dvc.yaml``, and by the notebooks).

Each stage reads its resolved params section (:func:`triqdef.config.load_params`),
writes its outputs atomically, and returns a small metrics record that also
lands in ``results/metrics/<stage>.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from . import data as data_mod
from . import paths, quant
from .config import section
from .errors import TriqdefError
from .meta import provenance, write_json
from .models import MODEL_NAMES, build_model
from .train import TrainConfig, accuracy, calibrate_all, fit, model_from_checkpoint, resolve_device

log = logging.getLogger("triqdef.pipeline")


def load_data(params: dict) -> data_mod.Splits:
    return data_mod.load_splits(section(params, "data"), params["base"]["seed"])


def data_record(splits: data_mod.Splits) -> dict:
    """What every result records about its data: source, origin, archive hash, requested/actual sizes."""
    src = splits.source
    return {"source": src.get("source"), "origin": src.get("origin"), "sha256": src.get("sha256"), "sizes": splits.sizes}


def run_prepare(params: dict) -> dict:
    """Stage ``prepare``: draw the train / holdout / test subsets the params ask for and record them.

    Writes ``results/data/splits.json``: data source, requested and actual
    sizes, images per class in each subset, and a checksum of the indices, so
    every later stage (which draws the same seeded subsets) can be traced to it.
    """
    import hashlib

    import numpy as np

    splits = load_data(params)
    record = dict(data_record(splits), seed=params["base"]["seed"], profile=params["base"]["profile"],
                  params=section(params, "data"))
    for name in ("train", "holdout", "test"):
        sub = getattr(splits, name)
        record[f"{name}_per_class"] = np.bincount(sub.labels.numpy(), minlength=10).tolist()
        record[f"{name}_indices_sha1"] = hashlib.sha1(np.asarray(sub.indices, dtype=np.int64).tobytes()).hexdigest()
    write_json(paths.results_dir() / "data" / "splits.json", record)
    log.info("data: source %s, sizes %s", record["source"], splits.sizes["actual"])
    return record


def calibration_batches(splits: data_mod.Splits, batch_size: int = 128):
    """Float batches of the held-out split (observer / BN calibration, never trained on)."""
    from .train import iter_batches

    return iter_batches(splits.holdout.images, batch_size)


def model_name(params: dict) -> str:
    name = section(params, "model").get("name")
    if name not in MODEL_NAMES:
        raise TriqdefError(f"parameter model.name = {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    return name


def quant_settings(params: dict) -> dict:
    q = section(params, "quant")
    bits = quant.check_bit_set(q.get("bits", []))
    flb = q.get("first_last_bits", 8)
    if flb is not None:
        quant.check_bits(flb)
    rng = q.get("activation_range", "max")
    if rng not in quant.RANGE_ESTIMATORS:
        raise TriqdefError(f"parameter quant.activation_range = {rng!r}: expected one of {', '.join(quant.RANGE_ESTIMATORS)}")
    return {"bits": list(bits), "first_last_bits": flb, "averaging_constant": float(q.get("averaging_constant", 0.01)),
            "range_estimator": rng}


def fp_checkpoint(params: dict, root: Path | None = None) -> Path:
    """``<root>/fp/<model>.pt``; ``root`` defaults to ``results/models`` (stage ``train_fp``)."""
    return (root or paths.models_dir()) / "fp" / f"{model_name(params)}.pt"


def qat_checkpoint(params: dict, all_layers: bool = False, root: Path | None = None) -> Path:
    """``<root>/qat/<model>[_all_layers].pt``; ``root`` defaults to ``results/models`` (stage ``train_qat``)."""
    suffix = "_all_layers" if all_layers else ""
    return (root or paths.models_dir()) / "qat" / f"{model_name(params)}{suffix}.pt"


def work_dir() -> Path:
    return paths.results_dir() / ".work"


def run_train_fp(params: dict, progress: bool = True, root: Path | None = None,
                 metrics_name: str | None = "train_fp") -> dict:
    """Stage ``train_fp``: the float model every table starts from (trained from scratch).

    ``root`` and ``metrics_name`` let another stage (``cross_arch``) train a
    second architecture into its own output folder; ``metrics_name=None``
    writes no metrics file.
    """
    t_stage = time.perf_counter()
    cfg = TrainConfig.from_params(section(params, "train_fp"), "train_fp")
    name, seed = model_name(params), params["base"]["seed"]
    device = resolve_device(params["base"].get("device", "auto"))
    splits = load_data(params)
    torch.manual_seed(seed)
    model = build_model(name)
    meta = provenance(params, {"kind": "fp", "model": name, "bits": None, "params": section(params, "train_fp"),
                               "data": data_record(splits), "num_classes": 10})
    out = fp_checkpoint(params, root)
    res = fit(model, splits.train.images, splits.train.labels, cfg, seed=seed, out_path=out, meta=meta,
              work_dir=work_dir(), device=device, progress=progress)
    acc = accuracy(model, splits.test.images, splits.test.labels)
    metrics = {"model": name, "test_accuracy": acc, "n_test": int(splits.test.labels.numel()),
               "steps": res["steps"], "wall_time_s": res["wall_time_s"], "train_images_per_s": res["images_per_s"],
               "data": data_record(splits), "profile": params["base"]["profile"],
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    if metrics_name:
        write_json(paths.metrics_dir() / f"{metrics_name}.json", metrics)
    log.info("FP %s: test accuracy %.2f%% on %d images, %.0f s", name, 100 * acc, metrics["n_test"], res["wall_time_s"])
    return metrics


def run_train_qat(params: dict, all_layers: bool = False, progress: bool = True, root: Path | None = None,
                  metrics_name: str | None = "train_qat") -> dict:
    """Stage ``train_qat``: standard multi-bit QAT on one shared backbone, fine-tuned from the FP weights.

    Each bit-width's BN starts as a copy of the FP BN; observers and BN
    statistics of every bit-width are calibrated on the held-out split first.
    ``all_layers=True`` quantizes the first and last layer at ``b`` too.
    ``root`` / ``metrics_name`` as in :func:`run_train_fp`.
    """
    t_stage = time.perf_counter()
    cfg = TrainConfig.from_params(section(params, "train_qat"), "train_qat")
    qs = quant_settings(params)
    flb = None if all_layers else qs["first_last_bits"]
    name, seed = model_name(params), params["base"]["seed"]
    device = resolve_device(params["base"].get("device", "auto"))
    splits = load_data(params)
    fp_path = fp_checkpoint(params, root)
    fp_model, fp_meta = model_from_checkpoint(fp_path, kind="fp", model_name=name)
    model = quant.quantize_model(fp_model, qs["bits"], flb, qs["averaging_constant"], qs["range_estimator"]).to(device)
    t0 = time.perf_counter()
    calibrate_all(model, splits.holdout.images, cfg.batch_size, device=device)
    calib_s = time.perf_counter() - t0
    meta = provenance(params, {"kind": "qat", "model": name, "bits": qs["bits"], "first_last_bits": flb,
                               "range_estimator": qs["range_estimator"], "averaging_constant": qs["averaging_constant"],
                               "params": section(params, "train_qat"), "quant": qs, "data": data_record(splits),
                               "init": {"checkpoint": str(fp_path.relative_to(paths.output_root())), "commit": fp_meta.get("commit")},
                               "num_classes": 10})
    out = qat_checkpoint(params, all_layers, root)
    res = fit(model, splits.train.images, splits.train.labels, cfg, seed=seed, out_path=out, meta=meta,
              work_dir=work_dir(), bits=qs["bits"], device=device, progress=progress)
    accs = {str(b): accuracy(model, splits.test.images, splits.test.labels, bits=b) for b in qs["bits"]}
    metrics = {"model": name, "first_last_bits": flb, "test_accuracy": accs, "n_test": int(splits.test.labels.numel()),
               "steps": res["steps"], "wall_time_s": res["wall_time_s"], "calibration_s": calib_s,
               "train_images_per_s": res["images_per_s"], "data": data_record(splits), "profile": params["base"]["profile"],
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    if metrics_name:
        write_json(paths.metrics_dir() / f"{metrics_name}{'_all_layers' if all_layers else ''}.json", metrics)
    log.info("QAT %s (first/last %s): %s", name, flb, {b: f"{100 * a:.1f}%" for b, a in accs.items()})
    return metrics
