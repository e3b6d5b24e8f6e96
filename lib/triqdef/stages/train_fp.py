"""Stage ``train_fp``: the float model every table starts from."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from triqdef.config import Config, StageConfig, as_dict
from triqdef.eval.accuracy import accuracy
from triqdef.meta import provenance, write_curve, write_metrics
from triqdef.models import build_model
from triqdef.stages.common import data_record, fp_checkpoint, load_data, work_dir
from triqdef.training import distributed
from triqdef.training.loop import fit, training_device

PARAMS = ("base", "data", "model", "train_fp")

log = logging.getLogger(__name__)


def run_train_fp(cfg: Config | StageConfig, progress: bool = True, root: Path | None = None,
                 metrics_name: str | None = "train_fp") -> dict:
    """Stage ``train_fp``: the float model every table starts from (trained from scratch).

    ``root`` and ``metrics_name`` let another stage (``cross_arch``) train a
    second architecture into its own output folder; ``metrics_name=None``
    writes no metrics file.
    """
    t_stage = time.perf_counter()
    train = cfg.train_fp
    name, seed = cfg.model.name, cfg.base.seed
    device = training_device(cfg.base)
    splits = load_data(cfg)
    torch.manual_seed(seed)
    model = build_model(name)
    meta = provenance(cfg, {"kind": "fp", "model": name, "bits": None, "params": as_dict(train),
                               "data": data_record(splits), "num_classes": 10})
    out = fp_checkpoint(cfg, root)
    res = fit(model, splits.train.images, splits.train.labels, train, seed=seed, out_path=out, meta=meta,
              work_dir=work_dir(), device=device, progress=progress, stacked=cfg.base.stacked,
              capture=cfg.base.compile)
    acc = accuracy(model, splits.test.images, splits.test.labels)
    metrics = {"model": name, "test_accuracy": acc, "n_test": int(splits.test.labels.numel()),
               "steps": res["steps"], "wall_time_s": res["wall_time_s"], "train_images_per_s": res["images_per_s"],
               "data": data_record(splits), "profile": cfg.base.profile,
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    if metrics_name and distributed.is_writer():  # headline numbers for `dvc metrics`; record and provenance beside
        write_metrics(metrics_name, {"acc_fp": acc, "n_test": metrics["n_test"], "steps": res["steps"],
                                     "stage_wall_time_s": metrics["stage_wall_time_s"]}, provenance(cfg, metrics))
        write_curve(metrics_name, res["history"])
    log.info("FP %s: test accuracy %.2f%% on %d images, %.0f s", name, 100 * acc, metrics["n_test"], res["wall_time_s"])
    return metrics
