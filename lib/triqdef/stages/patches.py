"""Stage ``patches``: the LAVAN / GAP patch sets (pool, seen, unseen) from the FP and standard-QAT models, at the
paper's size and at the second size that stage ``attack_strength`` recorded (the matched size)."""

from __future__ import annotations

import time

from triqdef import paths
from triqdef.attacks.patchsets import attack_images, make_patches, plan, regime_sizes, save_patchset, evaluated_regimes
from triqdef.config import Config, StageConfig, as_dict
from triqdef.errors import TriqdefError
from triqdef.meta import provenance, write_metrics
from triqdef.stages import attack_strength
from triqdef.stages import common as pipeline
from triqdef.training.loop import model_from_checkpoint, resolve_device

PARAMS = ("base", "data", "model", "patches", "regimes")


def run_make_patches(cfg: Config | StageConfig, progress: bool = True) -> dict:
    """Stage ``patches``: make every patch set from the FP and standard-QAT checkpoints; write them to
    ``results/patches/patches.pt`` and timings to ``results/metrics/patches.json``."""
    t_stage = time.perf_counter()
    pcfg, seed = cfg.patches, cfg.base.seed
    second, second_kind = attack_strength.second_size()
    evaluated = evaluated_regimes(cfg.regimes.evaluate, second, pcfg.size)   # the regimes whose tables are made
    specs = plan(pcfg, seed, second_size=second, evaluated=evaluated)
    device = resolve_device(cfg.base.device)
    name = cfg.model.name
    splits = pipeline.load_data(cfg)
    images, labels, idx = attack_images(splits, pcfg, seed)
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(cfg), kind="fp", model_name=name)
    independent = pcfg.unseen_bits_source == "independent_qat"
    qat_path = pipeline.qat_checkpoint(cfg, independent=independent)
    if independent and not qat_path.is_file():
        raise TriqdefError(f"independent standard-QAT checkpoint {qat_path} not found: expected "
                           "train_qat.independent_model: true (stage train_qat) for patches.unseen_bits_source: independent_qat")
    qat, qat_meta = model_from_checkpoint(qat_path, kind="qat", model_name=name)
    t0 = time.perf_counter()
    patches, seconds = make_patches(specs, {"fp": fp.to(device), "qat": qat.to(device)}, images, labels, pcfg, name, progress)
    wall = time.perf_counter() - t0
    meta = provenance(cfg, {"params": as_dict(pcfg), "data": pipeline.data_record(splits), "attack_images": int(len(idx)),
                            "fp_checkpoint_commit": fp_meta.get("commit"), "qat_checkpoint_commit": qat_meta.get("commit"),
                            "unseen_bits_source": str(qat_path.relative_to(paths.output_root())),
                            "regimes": {r: v for r, v in regime_sizes(pcfg, second).items()},
                            "evaluated_regimes": list(evaluated),
                            "second_size": second, "second_size_kind": second_kind})
    save_patchset(paths.results_dir() / "patches" / "patches.pt", patches, meta)
    per_set: dict[str, dict] = {}
    for p, s in zip(patches, seconds):
        d = per_set.setdefault(p.info["set"], {"n": 0, "seconds": 0.0})
        d["n"] += 1
        d["seconds"] = round(d["seconds"] + s, 2)
    metrics = {"n_patches": len(patches), "wall_time_s": round(wall, 1), "seconds_per_patch_mean": round(wall / len(patches), 2),
               "per_set": per_set, "attack_images": int(len(idx)), "steps": pcfg.steps, "profile": cfg.base.profile,
               "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    write_metrics("patches", {k: metrics[k] for k in ("n_patches", "steps", "seconds_per_patch_mean", "stage_wall_time_s")},
                  provenance(cfg, metrics))
    return metrics
