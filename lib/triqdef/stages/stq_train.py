"""Stage ``stq_train``: the models of notebook 05 (STQ, Zakariyya et al. 2025; docs/design.md#stq).

From the same data as every other stage, with the ``train_fp`` recipe overridden by ``stq.train``, it trains

* ``fp``: TinySTQNet in full precision (the summary's FP baseline), plain cross-entropy;
* ``stq``: the same network with stochastic ternary weights and 4-bit activations (first and last layers at 8
  bits), plain cross-entropy (T = 1), also STQ-T1's teacher;
* ``stq_t1``: defensive distillation at T = 1, a student of ``stq`` on its soft labels;
* ``stq_t50_teacher`` then ``stq_t50``: the teacher trained at T = ``stq.distill_temperature``, the student at
  that T on its soft labels (STQ-T50);
* ``stq_jr``: STQ at T = 1 with explicit Jacobian regularisation (λ ``stq.lambda_jr``), to test the summary's
  claim that ternary QAT supplies it implicitly.

Every model starts from its own seeded initialisation and sees the same batches (the loop's (seed, step)
order). Checkpoints (metadata ``stq``: the network's config, for :func:`triqdef.stq.model.stq_from_checkpoint`)
go to ``results/models/stq/<name>.pt``; clean test accuracy, memory footprint and times to
``results/metrics/stq_train.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from triqdef import paths
from triqdef.config import Config, StageConfig, as_dict, override
from triqdef.meta import provenance, write_metrics
from triqdef.stages import common as pipeline

PARAMS = ("base", "data", "train_fp", "stq")

log = logging.getLogger(__name__)

#: The runs, in training order (a student after its teacher).
RUNS = ("fp", "stq", "stq_t1", "stq_t50_teacher", "stq_t50", "stq_jr")
#: Seed offset of each run's initialisation (with ``base.seed``).
_INIT_SALT = 60_000


def checkpoint(name: str) -> Path:
    return paths.models_dir() / "stq" / f"{name}.pt"


def train_params(cfg: Config | StageConfig):
    """The ``train_fp`` recipe with ``stq.train``'s overrides (checked)."""
    return override(cfg.train_fp, cfg.stq.train, "stq.train")


def build(cfg: Config | StageConfig, quantized: bool, run: str):
    """A freshly initialised TinySTQNet for ``run`` (its initialisation seeded from ``base.seed`` and the run)."""
    from triqdef.stq.model import build_stq

    s, seed = cfg.stq, cfg.base.seed
    k = RUNS.index(run)
    torch.manual_seed(seed * 1_000 + _INIT_SALT + k)
    return build_stq(quantized, widths=s.widths, hidden=s.hidden, activation_bits=s.activation_bits,
                     edge_bits=s.edge_bits, seed=seed * 1_000 + k, rounding=s.rounding,
                     temperature=s.rounding_temperature)


def step_function(cfg: Config | StageConfig, run: str, teachers: dict):
    """The training step of ``run`` (:mod:`triqdef.stq.distillation`, :mod:`triqdef.stq.jacobian`)."""
    from triqdef.stq.distillation import DistillationStep, TemperatureStep
    from triqdef.stq.jacobian import JacobianStep

    s, smooth = cfg.stq, train_params(cfg).label_smoothing
    scaled = s.temperature_scaling  # teacher's and student's losses x T: gradients at the T = 1 scale
    if run in ("fp", "stq"):
        return TemperatureStep(1.0, smooth)
    if run == "stq_t1":
        return DistillationStep(teachers["stq"], 1.0)
    if run == "stq_t50_teacher":
        return TemperatureStep(s.distill_temperature, smooth, scale_by_T=scaled)
    if run == "stq_t50":
        return DistillationStep(teachers["stq_t50_teacher"], s.distill_temperature, scale_by_T=scaled)
    if run == "stq_jr":
        return JacobianStep(s.lambda_jr, s.jr_projections, cfg.base.seed, base=TemperatureStep(1.0, smooth))
    raise ValueError(run)


def run_stq_train(cfg: Config | StageConfig, progress: bool = True) -> dict:
    """Train every run of :data:`RUNS` and record its clean accuracy, footprint and time."""
    from triqdef.eval.accuracy import accuracy
    from triqdef.stq.model import memory_footprint_kb, parameter_count
    from triqdef.training.loop import fit, training_device

    t_stage = time.perf_counter()
    train = train_params(cfg)
    device = training_device(cfg.base)
    splits = pipeline.load_data(cfg)
    teachers, out = {}, {}
    for run in RUNS:
        model = build(cfg, run != "fp", run)
        step = step_function(cfg, run, teachers)
        meta = provenance(cfg, {"kind": "stq", "model": "tiny_stq", "run": run, "stq": model.config(),
                                "params": as_dict(train), "settings": as_dict(cfg.stq),
                                "data": pipeline.data_record(splits)})
        res = fit(model, splits.train.images, splits.train.labels, train, seed=cfg.base.seed, out_path=checkpoint(run),
                  meta=meta, work_dir=pipeline.work_dir(), device=device, progress=progress, step_fn=step,
                  capture=cfg.base.compile)
        model.eval()
        acc = accuracy(model, splits.test.images, splits.test.labels)
        teachers[run] = model
        out[run] = {"test_accuracy": acc, "memory_kb": round(memory_footprint_kb(model), 1),
                    "parameters": parameter_count(model), "steps": res["steps"],
                    "wall_time_s": round(res["wall_time_s"], 1)}
        log.info("STQ %s: %.1f%% clean, %.0f KB, %.0f s", run, 100 * acc, out[run]["memory_kb"], res["wall_time_s"])
    metrics = {"runs": out, "n_test": int(splits.test.labels.numel()), "profile": cfg.base.profile,
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    write_metrics("stq_train", {**{f"acc_{r}": v["test_accuracy"] for r, v in out.items()},
                                **{f"kb_{r}": v["memory_kb"] for r, v in out.items() if r in ("fp", "stq")},
                                "n_test": metrics["n_test"], "stage_wall_time_s": metrics["stage_wall_time_s"]},
                  provenance(cfg, metrics))
    return metrics
