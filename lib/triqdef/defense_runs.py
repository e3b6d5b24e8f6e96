"""Stage ``defenses``: train each defense from one shared checkpoint (DESIGN "Models that every table shares").

Every method (standard multi-bit QAT, PBAT, DWQ, TriQDef and its ablation
variants) starts from the same checkpoint and runs the same number of steps
on the same data and batches (the ``defenses`` params section); the rows of
Tables 4, 5, 7 and 13 then differ only by the method. ``defenses.init``
names that checkpoint: ``fp`` (the FP weights; new quantizers calibrated, as
the paper fine-tunes) or ``qat`` (the standard multi-bit QAT model of stage
``train_qat``; every bit-width's quantizers and BN are then already trained,
and BACT only gates which bit-widths enter the loss). The ``cpu`` profile
uses ``qat`` so that a few hundred steps measure the defense rather than the
recovery from quantization. Checkpoints go to
``results/models/defenses/<run>.pt``, metrics (clean accuracy per bit-width,
time, images/s, the logged loss terms' last values) to
``results/metrics/defenses/<run>.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from . import paths, pipeline, quant
from .bact import Schedule
from .config import section
from .errors import TriqdefError
from .meta import provenance, write_json
from .train import TrainConfig, accuracy, calibrate_all, fit, model_from_checkpoint, resolve_device

log = logging.getLogger("triqdef.defenses")

METHODS = ("qat", "pbat", "dwq", "triqdef")


def run_name(method: str, variant: str | None = None) -> str:
    return method if not variant else f"{method}-{variant}"


def checkpoint(method: str, variant: str | None = None) -> Path:
    """``results/models/defenses/<method>.pt``; ablation variants in ``results/models/ablations/<method>-<variant>.pt``."""
    folder = "ablations" if variant else "defenses"
    return paths.models_dir() / folder / f"{run_name(method, variant)}.pt"


def variants(params: dict) -> dict[str, dict]:
    """TriQDef variants of the ablations (``ablations.variants``: name -> overrides of the ``triqdef`` section)."""
    if "ablations" not in params:
        return {}
    v = section(params, "ablations").get("variants") or {}
    if not isinstance(v, dict):
        raise TriqdefError(f"parameter ablations.variants = {v!r}: expected a mapping name -> triqdef overrides")
    return v


def ablation_runs(params: dict) -> list[str]:
    """The variants the active profile trains (``ablations.run``), each checked against ``ablations.variants``."""
    run = section(params, "ablations").get("run") or []
    known = variants(params)
    for v in run:
        if v not in known:
            raise TriqdefError(f"parameter ablations.run names {v!r}: expected one of {', '.join(known)}")
    return list(run)


def run_ablations(params: dict, progress: bool = True) -> list[dict]:
    """Stage ``ablations``: every TriQDef variant of ``ablations.run``."""
    for v in ablation_runs(params):  # every variant's settings, before the first (long) run
        validate_settings("triqdef", params, variants(params)[v])
    return [run_defense(params, "triqdef", v, progress) for v in ablation_runs(params)]


def pool_contents(patches_path: Path | None = None) -> torch.Tensor:
    """Contents (P, 3, s, s) of the training pool (set ``pool``) of the patch stage."""
    from .patchsets import load_patchset, select

    patches, _ = load_patchset(patches_path or paths.results_dir() / "patches" / "patches.pt")
    pool = select(patches, "pool")
    if not pool:
        raise TriqdefError("the patch file has no 'pool' set: expected the training pool of 'triqdef patches make'")
    return torch.stack([p.content for p in pool])


INITS = ("fp", "qat")


def init_kind(params: dict) -> str:
    """``defenses.init``: the checkpoint every defense starts from (``fp`` or ``qat``)."""
    init = section(params, "defenses").get("init", "fp")
    if init not in INITS:
        raise TriqdefError(f"parameter defenses.init = {init!r}: expected one of {', '.join(INITS)}")
    return init


def initial_model(params: dict, init: str):
    """(path, switchable-precision model, meta) of the shared starting checkpoint of every defense."""
    qs, name = pipeline.quant_settings(params), pipeline.model_name(params)
    if init == "fp":
        path = pipeline.fp_checkpoint(params)
        fp_model, meta = model_from_checkpoint(path, kind="fp", model_name=name)
        model = quant.quantize_model(fp_model, qs["bits"], qs["first_last_bits"], qs["averaging_constant"], qs["range_estimator"])
        return path, model, meta
    path = pipeline.qat_checkpoint(params)
    model, meta = model_from_checkpoint(path, kind="qat", model_name=name)
    if list(meta.get("bits") or []) != list(qs["bits"]) or meta.get("first_last_bits") != qs["first_last_bits"]:
        raise TriqdefError(f"checkpoint {path} has bits {meta.get('bits')} (first/last {meta.get('first_last_bits')}): "
                           f"expected quant.bits {qs['bits']} (first/last {qs['first_last_bits']}); re-run stage train_qat")
    return path, model, meta


def build_step(method: str, params: dict, model, splits, total_steps: int, overrides: dict | None = None,
               calibrate_new_bits: bool = True):
    """The step function (or None for plain multi-bit QAT) and a description of the settings used.

    ``calibrate_new_bits``: TriQDef's BACT copies BN and calibrates the quantizers of each newly enabled
    bit-width (from FP weights); False when the start checkpoint already trained every bit-width.
    """
    from .defenses import DWQStep, PBATStep, TriQDefStep, triqdef_settings

    seed = params["base"]["seed"]
    qs = pipeline.quant_settings(params)
    if method == "qat":
        return None, {}
    if method == "pbat":
        cfg = section(params, "pbat")
        size = section(params, "patches").get("size", 6)
        return PBATStep(qs["bits"], seed, cfg.get("rho", 0.5), size, cfg.get("attack_steps", 3), cfg.get("step_size", 0.1),
                        section(params, "patches").get("border", 4)), dict(cfg, size=size)
    if method == "dwq":
        cfg = section(params, "dwq")
        return DWQStep(qs["bits"], seed, cfg.get("eps", 8 / 255), cfg.get("alpha", 2 / 255), cfg.get("attack_steps", 3)), cfg
    if method == "triqdef":
        cfg = dict(section(params, "triqdef"), **(overrides or {}))
        name = pipeline.model_name(params)
        settings = triqdef_settings({"triqdef": cfg}, name)
        schedule = Schedule(cfg.get("bact") or [{"bits": qs["bits"], "share": 1.0}], total_steps)
        if set(schedule.all_bits) != set(qs["bits"]):
            raise TriqdefError(f"parameter triqdef.bact ends with bits {list(schedule.all_bits)}: expected quant.bits {qs['bits']}")
        pool = pool_contents() if settings.patch_source == "pool" else None
        holdout = list(pipeline.calibration_batches(splits))
        return (TriQDefStep(settings, schedule, pool, holdout, seed, calibrate_new_bits=calibrate_new_bits),
                dict(cfg, bact_schedule=schedule.to_list(), bact_calibrates=calibrate_new_bits))
    raise TriqdefError(f"unknown defense {method!r}: expected one of {', '.join(METHODS)}")


def validate_settings(method: str, params: dict, overrides: dict | None = None) -> None:
    """Check a method's params (TriQDef settings and BACT stages, PBAT / DWQ numbers) without loading anything."""
    from .defenses import triqdef_settings

    if method == "triqdef":
        cfg = dict(section(params, "triqdef"), **(overrides or {}))
        triqdef_settings({"triqdef": cfg}, pipeline.model_name(params))
        Schedule(cfg.get("bact") or [{"bits": pipeline.quant_settings(params)["bits"], "share": 1.0}], 100)
    for name, keys in (("pbat", ("rho", "attack_steps", "step_size")), ("dwq", ("eps", "alpha", "attack_steps"))):
        if method == name:
            for k in keys:
                v = section(params, name).get(k)
                if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
                    raise TriqdefError(f"parameter {name}.{k} = {v!r}: expected a positive number")


def run_defense(params: dict, method: str, variant: str | None = None, progress: bool = True) -> dict:
    """Train one defense (``variant``: a TriQDef ablation of ``ablations.variants``) and record its metrics."""
    t_stage = time.perf_counter()
    if method not in METHODS:
        raise TriqdefError(f"unknown defense {method!r}: expected one of {', '.join(METHODS)}")
    overrides = None
    if variant:
        vs = variants(params)
        if method != "triqdef" or variant not in vs:
            raise TriqdefError(f"unknown variant {variant!r} of {method}: expected one of {', '.join(vs) or '(none)'} (ablations.variants)")
        overrides = vs[variant]
    run = run_name(method, variant)
    cfg = TrainConfig.from_params(section(params, "defenses"), "defenses")
    qs = pipeline.quant_settings(params)
    validate_settings(method, params, overrides)  # before any expensive loading
    init_kind(params)
    name, seed = pipeline.model_name(params), params["base"]["seed"]
    device = resolve_device(params["base"].get("device", "auto"))
    splits = pipeline.load_data(params)
    init = init_kind(params)
    init_path, model, init_meta = initial_model(params, init)
    model = model.to(device)
    total = cfg.total_steps(len(splits.train.labels))
    step_fn, settings = build_step(method, params, model, splits, total, overrides, calibrate_new_bits=(init == "fp"))
    if method != "triqdef" and init == "fp":  # TriQDef calibrates each bit-width when BACT enables it
        calibrate_all(model, splits.holdout.images, cfg.batch_size, device=device)
    meta = provenance(params, {"kind": "defense", "method": method, "variant": variant, "run": run, "model": name,
                               "bits": qs["bits"], "first_last_bits": qs["first_last_bits"], "range_estimator": qs["range_estimator"],
                               "averaging_constant": qs["averaging_constant"], "params": section(params, "defenses"), "settings": settings, "quant": qs,
                               "data": pipeline.data_record(splits), "num_classes": 10,
                               "init": {"kind": init, "checkpoint": str(init_path.relative_to(paths.output_root())),
                                        "commit": init_meta.get("commit")}})
    res = fit(model, splits.train.images, splits.train.labels, cfg, seed=seed, out_path=checkpoint(method, variant), meta=meta,
              work_dir=pipeline.work_dir(), bits=qs["bits"], device=device, progress=progress, step_fn=step_fn)
    accs = {str(b): accuracy(model, splits.test.images, splits.test.labels, bits=b) for b in qs["bits"]}
    last = res["history"][-1] if res["history"] else {}
    metrics = {"run": run, "method": method, "variant": variant, "model": name, "test_accuracy": accs,
               "n_test": int(splits.test.labels.numel()), "steps": res["steps"], "wall_time_s": res["wall_time_s"],
               "train_images_per_s": res["images_per_s"], "ms_per_step": 1000 * res["wall_time_s"] / max(res["steps"], 1),
               "last_step": last, "settings": settings, "data": pipeline.data_record(splits),
               "profile": params["base"]["profile"], "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    write_json(paths.metrics_dir() / ("ablations" if variant else "defenses") / f"{run}.json", metrics)
    log.info("%s: %s", run, {b: f"{100 * a:.1f}%" for b, a in accs.items()})
    return metrics
