"""Stage ``defenses``: train each defense from one shared checkpoint (docs/design.md#one-shared-checkpoint-for-every-defense).

Every method (standard multi-bit QAT, PBAT, DWQ, TriQDef and its ablation
variants, and QADT-R, the authors' earlier defense) starts from the same checkpoint and runs the same number of steps
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

from triqdef import paths, quant
from triqdef.bact import Schedule
from triqdef.config import DEFENSE_METHODS, Config, StageConfig, TriQDefParams, as_dict, override
from triqdef.errors import TriqdefError
from triqdef.eval.accuracy import accuracy
from triqdef.meta import provenance, write_curve, write_metrics
from triqdef.stages import common as pipeline
from triqdef.training.loop import calibrate_all, fit, model_from_checkpoint, training_device

# the defense@<method> stages; the ablations stage reads `ablations` instead of pbat / dwq / patches
PARAMS = ("base", "data", "model", "quant", "defenses", "triqdef", "pbat", "dwq", "qadt_r", "patches")

log = logging.getLogger(__name__)

METHODS = DEFENSE_METHODS


def run_name(method: str, variant: str | None = None, training_seed: int | None = None,
             length_factor: float | None = None) -> str:
    """``pbat``, ``triqdef-no_fdp`` (an ablation variant), ``pbat-seed1`` (a training-seed replica), ``pbat-x4``
    (a training-length run, 4 × the core run's steps)."""
    name = method if not variant else f"{method}-{variant}"
    name = name if training_seed is None else f"{name}-seed{training_seed}"
    return name if length_factor is None else f"{name}-x{length_factor:g}"


def run_folder(variant: str | None = None, training_seed: int | None = None, length_factor: float | None = None) -> str:
    """Where a run's files go under results/models, metadata, metrics and plots: ``ablations`` (a variant of the
    core), ``variants`` (a variant with a training seed: the replica group's ``seeds.variants``), ``seeds``,
    ``length`` or ``defenses``."""
    if variant:
        return "ablations" if training_seed is None else "variants"
    return "seeds" if training_seed is not None else "length" if length_factor is not None else "defenses"


def run_root(training_seed: int | None = None, length_factor: float | None = None) -> Path:
    """The results root of a run's files: ``results/`` for the core and the ablations, ``results/replicas/`` for
    the replica group (training seeds, training length), which no core stage and not the report depends on."""
    replica = training_seed is not None or length_factor is not None
    return paths.replicas_dir() if replica else paths.results_dir()


def checkpoint(method: str, variant: str | None = None, training_seed: int | None = None,
               length_factor: float | None = None) -> Path:
    """``results/models/defenses/<method>.pt``; ablation variants in ``results/models/ablations/<method>-<variant>.pt``;
    training-seed replicas in ``results/replicas/models/seeds/<method>-seed<k>.pt``, the variants' seeds in
    ``results/replicas/models/variants/<method>-<variant>-seed<k>.pt`` and training-length runs in
    ``results/replicas/models/length/<method>-x<f>.pt`` (apart: the stages that read every defense do not depend
    on them)."""
    return (run_root(training_seed, length_factor) / "models" / run_folder(variant, training_seed, length_factor)
            / f"{run_name(method, variant, training_seed, length_factor)}.pt")


def defended_models(model_name: str) -> tuple[dict, dict]:
    """Every defense run's model and checkpoint metadata, by its table row label (``schemas.DEFENSE_LABELS``, in
    table order): what notebooks 02 and 04 evaluate."""
    from triqdef.reporting import schemas as S
    from triqdef.training.loop import model_from_checkpoint

    models, metas = {}, {}
    for run, label in S.DEFENSE_LABELS.items():
        models[label], metas[label] = model_from_checkpoint(checkpoint(run), kind="defense", model_name=model_name)
    return models, metas


def pool_contents(patches_path: Path | None = None) -> dict[int, torch.Tensor]:
    """Contents of the training pool by patch size: {size: (P, 3, size, size)}, from the ``pool`` set and, when the
    patch stage made one, ``pool_matched`` (the defenses train on both sizes; docs/design.md#attack-regime)."""
    from triqdef.attacks.patchsets import MATCHED, load_patchset, regime_set, select

    patches, _ = load_patchset(patches_path or paths.results_dir() / "patches" / "patches.pt")
    pool = select(patches, "pool") + select(patches, regime_set("pool", MATCHED))
    if not pool:
        raise TriqdefError("the patch file has no 'pool' set: expected the training pool of 'triqdef patches make'")
    by_size: dict[int, list] = {}
    for p in pool:
        by_size.setdefault(p.size, []).append(p.content)
    return {size: torch.stack(contents) for size, contents in sorted(by_size.items())}


#: Bootstrap replicates of each convergence-curve interval (fewer than the tables' 2,000: a curve point every 100 steps).
MONITOR_BOOT = 500


def monitor_split(cfg: Config | StageConfig, splits):
    """The images the convergence monitor evaluates on: the first ``defenses.monitor_images`` of the held-out split
    (drawn from CIFAR-10's training split, disjoint from the training subset; the quantizers' calibration batches
    come from it too), so that no curve, and no choice read off one, sees a test image. One line when the
    held-out split is smaller."""
    from triqdef.data.cifar import Subset

    n, held_out = cfg.defenses.monitor_images, splits.holdout
    if len(held_out) < n:
        raise TriqdefError(f"parameter defenses.monitor_images = {n}: expected at most data.holdout_size "
                           f"({len(held_out)} held-out images; the monitor never reads the test images)")
    return Subset(images=held_out.images[:n], labels=held_out.labels[:n], indices=held_out.indices[:n])


def convergence_monitor(cfg: Config | StageConfig, splits):
    """The evaluation :func:`triqdef.training.loop.fit` runs every ``defenses.monitor_every`` steps (None when 0):
    on the first ``monitor_images`` held-out images (:func:`monitor_split`; never the test images the tables
    report, issue 30 item 6) and at each of
    ``monitor_bits``, clean accuracy and each attack's targeted ASR of the ``seen`` patch set (matched size when the
    patch stage made it, else the paper's size; transfer patches made on the FP model), with its 95 % bootstrap
    interval over images and patches (``MONITOR_BOOT`` replicates) and the numbers of images and patches. A
    bit-width whose quantizers are not yet calibrated (BACT from FP weights) gives NaN."""
    import math

    from triqdef.attacks.patchsets import MATCHED, load_patchset, regime_set, select
    from triqdef.eval.accuracy import predict
    from triqdef.eval.intervals import bootstrap_rate
    from triqdef.eval.transfer import patch_outcomes

    train = cfg.defenses
    if not train.monitor_every:
        return None
    held_out = monitor_split(cfg, splits)
    images, labels = held_out.images, held_out.labels  # uint8; predict and the patch evaluation convert them
    patches, _ = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    seen_name = regime_set("seen", MATCHED) if select(patches, regime_set("seen", MATCHED)) else "seen"
    seen = {a: select(patches, seen_name, a) for a in cfg.patches.attacks}
    seen = {a: ps for a, ps in seen.items() if ps}
    if not seen:
        raise TriqdefError("the patch file has no 'seen' set: expected the seen patches of 'triqdef patches make'")

    def ready(model, b) -> bool:
        return b == quant.FP_BITS or all(q.calibrated for q in quant.activation_quantizers(model, b))

    def evaluate(model) -> dict[str, float]:
        point: dict[str, float] = {"seen_set": seen_name, "images": "holdout", "n_images": int(labels.numel())}
        for b in train.monitor_bits:
            if not ready(model, b):
                point[f"acc_{b}"] = math.nan
                point.update({f"asr_{a}_{b}{k}": math.nan for a in seen for k in ("", " low", " high")})
                continue
            clean = predict(model, images, b)
            point[f"acc_{b}"] = (clean == labels).float().mean().item()
            for a, ps in seen.items():
                targeted, _ = patch_outcomes(ps, model, b, images, labels, clean)
                rate = bootstrap_rate(targeted, MONITOR_BOOT, cfg.base.seed)  # Python floats: weights-only checkpoints
                point.update({f"asr_{a}_{b}": float(rate.value), f"asr_{a}_{b} low": float(rate.low),
                              f"asr_{a}_{b} high": float(rate.high), f"n_patches_{a}": len(ps)})
        return point

    return evaluate


def initial_model(cfg: Config | StageConfig, init: str):
    """(path, switchable-precision model, meta) of the shared starting checkpoint of every defense."""
    q, name = cfg.quant, cfg.model.name
    if init == "fp":
        path = pipeline.fp_checkpoint(cfg)
        fp_model, meta = model_from_checkpoint(path, kind="fp", model_name=name)
        model = quant.quantize_model(fp_model, q.bits, q.first_last_bits, q.averaging_constant, q.activation_range)
        return path, model, meta
    path = pipeline.qat_checkpoint(cfg)
    model, meta = model_from_checkpoint(path, kind="qat", model_name=name)
    if list(meta.get("bits") or []) != list(q.bits) or meta.get("first_last_bits") != q.first_last_bits:
        raise TriqdefError(f"checkpoint {path} has bits {meta.get('bits')} (first/last {meta.get('first_last_bits')}): "
                           f"expected quant.bits {list(q.bits)} (first/last {q.first_last_bits}); re-run stage train_qat")
    return path, model, meta


def triqdef_params(cfg: Config | StageConfig, variant: str | None = None) -> TriQDefParams:
    """The ``triqdef`` section, with the overrides of ablation ``variant`` (``ablations.variants``) applied and checked."""
    if not variant:
        return cfg.triqdef
    variants = cfg.ablations.variants
    if variant not in variants:
        raise TriqdefError(f"unknown variant {variant!r} of triqdef: expected one of {', '.join(variants) or '(none)'} "
                           "(ablations.variants)")
    return override(cfg.triqdef, variants[variant], f"ablations.variants.{variant}")


def bact_schedule(tq: TriQDefParams, bits, total_steps: int) -> Schedule:
    """BACT's curriculum (``triqdef.bact``) over ``total_steps``; its last stage must train every bit-width of ``bits``."""
    schedule = Schedule([{"bits": list(st.bits), "share": st.share} for st in tq.bact], total_steps)
    if set(schedule.all_bits) != set(bits):
        raise TriqdefError(f"parameter triqdef.bact ends with bits {list(schedule.all_bits)}: expected quant.bits {list(bits)}")
    return schedule


def build_step(method: str, cfg: Config | StageConfig, model, splits, total_steps: int, variant: str | None = None,
               copy_bn: bool = True, seed: int | None = None):
    """The step function (or None for plain multi-bit QAT) and a description of the settings used.

    TriQDef's BACT calibrates each newly enabled bit-width on the held-out split (``triqdef.bact_calibrate``),
    its BN first copied from the lowest active one when ``copy_bn`` (from FP weights; False when the start
    checkpoint trained every bit-width's BN already), and measures the held-out accuracy at that bit-width just
    before and after (:func:`bact_measure`).
    """
    from triqdef.defenses.pbat import PBATStep
    from triqdef.defenses.steps import DWQStep, TriQDefStep, triqdef_settings

    seed, bits = cfg.base.seed if seed is None else seed, list(cfg.quant.bits)
    if method == "qat":
        return None, {}
    if method == "pbat":  # the sizes of the training pool (the paper's and the matched size); starts from it
        pb, pool = cfg.pbat, pool_contents()
        return (PBATStep(bits, seed, pb.rho, tuple(pool), pb.attack_steps, pb.step_size, cfg.patches.border,
                         pb.stride, pool if pb.init == "pool" else None),
                dict(as_dict(pb), sizes=list(pool)))
    if method == "dwq":
        dw = cfg.dwq
        return DWQStep(bits, seed, dw.eps, dw.alpha, dw.attack_steps), as_dict(dw)
    if method == "qadt_r":  # A-QAPA mixes the training pool (both sizes) with on-the-fly patches
        from triqdef.defenses.qadt_r import QADTRStep

        qr = cfg.qadt_r
        pool = pool_contents() if qr.pool_share > 0 else None
        return (QADTRStep(bits, seed, pool, rho=qr.rho, pool_share=qr.pool_share, attack_steps=qr.attack_steps,
                          step_size=qr.step_size, lambda_gir=qr.lambda_gir, sigma=qr.sigma,
                          gir_sub_batch=qr.gir_sub_batch, border=cfg.patches.border),
                dict(as_dict(qr), sizes=sorted(pool) if pool else []))
    if method == "triqdef":
        tq = triqdef_params(cfg, variant)
        settings = triqdef_settings(tq, cfg.model.name)
        schedule = bact_schedule(tq, bits, total_steps)
        pool = pool_contents() if settings.patch_source == "pool" else None
        holdout = list(pipeline.calibration_batches(splits))
        return (TriQDefStep(settings, schedule, pool, holdout, seed, calibrate_new_bits=tq.bact_calibrate,
                            copy_bn=copy_bn, measure=bact_measure(splits)),
                dict(as_dict(tq), bact_schedule=schedule.to_list(), bact_copies_bn=copy_bn and tq.bact_calibrate))
    raise TriqdefError(f"unknown defense {method!r}: expected one of {', '.join(METHODS)}")


def bact_measure(splits):
    """``measure(model, b)``: top-1 accuracy at ``b`` bits on the held-out split (eval mode, a 0-dim tensor, no
    host read), which BACT takes just before and just after calibrating a newly enabled bit-width."""
    from triqdef.data.cifar import to_float
    from triqdef.training.passes import uncounted

    labels = splits.holdout.labels

    @torch.no_grad()
    def measure(model, b: int) -> torch.Tensor:
        device = next(model.parameters()).device
        correct = torch.zeros((), device=device)
        with quant.eval_mode(model), quant.use_bitwidth(model, b), uncounted():   # a reading, not training
            for i in range(0, len(labels), 500):
                x = to_float(splits.holdout.images[i:i + 500]).to(device)
                correct += (model(x).argmax(1) == labels[i:i + 500].to(device)).sum()
        return correct / max(len(labels), 1)
    return measure


def bact_calibrations(step_fn) -> list[dict]:
    """BACT's measured calibrations of a TriQDef run (step, bit-width, held-out accuracy before and after, in %)."""
    return [{"step": c["step"], "bits": c["bits"], "holdout_acc_before": round(100 * float(c["before"]), 2),
             "holdout_acc_after": round(100 * float(c["after"]), 2)} for c in getattr(step_fn, "calibrations", [])]


def inner_attack_success(history: list[dict], bits, last_share: float = 0.25) -> dict:
    """PBAT's inner attack, measured (issue 30, item 2): per bit-width, the mean share of its slice of patched
    training images misclassified with the starting patches (``fool_init``) and with the optimised ones
    (``fool``), in %, over the last ``last_share`` of the logged steps; empty for a run without one."""
    rows = [h for h in history if any(f"fool_{b}" in h for b in bits)]
    rows = rows[int(len(rows) * (1 - last_share)):]
    out = {}
    for b in bits:
        vals = [(h[f"fool_init_{b}"], h[f"fool_{b}"]) for h in rows if f"fool_{b}" in h]
        if vals:
            out[str(b)] = {"fool_init": round(100 * sum(v[0] for v in vals) / len(vals), 2),
                           "fool": round(100 * sum(v[1] for v in vals) / len(vals), 2), "logged_steps": len(vals)}
    return out


def validate_settings(method: str, cfg: Config | StageConfig, variant: str | None = None) -> None:
    """Check what the config's types cannot (TriQDef's taps for this model, BACT's stages) without loading anything."""
    from triqdef.defenses.steps import triqdef_settings

    if method not in METHODS:
        raise TriqdefError(f"unknown defense {method!r}: expected one of {', '.join(METHODS)}")
    if variant and method != "triqdef":
        raise TriqdefError(f"unknown variant {variant!r} of {method}: only triqdef has ablation variants")
    if method == "triqdef":
        tq = triqdef_params(cfg, variant)
        triqdef_settings(tq, cfg.model.name)
        bact_schedule(tq, cfg.quant.bits, 100)
        if cfg.defenses.init == "fp" and not tq.bact_calibrate:
            raise TriqdefError("parameter triqdef.bact_calibrate = false with defenses.init fp: expected true (from FP "
                               "weights a bit-width BACT enables has no calibrated quantizer)")


def check_training_seed(cfg: Config | StageConfig, method: str, training_seed: int | None,
                        variant: str | None = None) -> None:
    """A training-seed replica must be one ``seeds`` asks for (the DVC matrix reads ``seeds.common``): a method of
    ``seeds.methods`` with one of ``seeds.training_seeds``, or TriQDef's variant of ``seeds.variants`` with one of
    ``seeds.variant_seeds`` (base.seed included)."""
    if training_seed is None:
        return
    sd = cfg.seeds
    if variant is not None:
        if method != "triqdef" or variant not in sd.variants or training_seed not in sd.variant_seeds:
            raise TriqdefError(f"variant {variant!r} of {method} with training seed {training_seed}: expected triqdef, "
                               f"a variant of seeds.variants {list(sd.variants)} and a seed of seeds.variant_seeds "
                               f"{list(sd.variant_seeds)}")
        return
    if training_seed == cfg.base.seed:
        raise TriqdefError(f"training seed {training_seed}: that is base.seed, the core run (defense@{method}); "
                           f"expected one of seeds.training_seeds {list(sd.training_seeds)}")
    if training_seed not in sd.training_seeds or method not in sd.methods:
        raise TriqdefError(f"training seed {training_seed} for {method}: expected a seed of seeds.training_seeds "
                           f"{list(sd.training_seeds)} and a method of seeds.methods {list(sd.methods)}")


def check_length_factor(cfg: Config | StageConfig, method: str, length_factor: float | None) -> None:
    """A training-length run must be one ``training_length`` asks for (the DVC matrix reads its ``common``)."""
    if length_factor is None:
        return
    tl = cfg.training_length
    if length_factor not in tl.factors or method not in tl.methods:
        raise TriqdefError(f"training length x{length_factor:g} for {method}: expected a factor of "
                           f"training_length.factors {list(tl.factors)} and a method of training_length.methods "
                           f"{list(tl.methods)}")


def scaled_training(train, length_factor: float | None):
    """``defenses`` with its steps (or epochs) times ``length_factor`` (None: as it is)."""
    import dataclasses

    if length_factor is None:
        return train
    if train.steps is not None:
        return dataclasses.replace(train, steps=max(1, int(round(train.steps * length_factor))))
    return dataclasses.replace(train, epochs=train.epochs * length_factor)


def run_defense(cfg: Config | StageConfig, method: str, variant: str | None = None, progress: bool = True,
                training_seed: int | None = None, length_factor: float | None = None) -> dict:
    """Train one defense (``variant``: a TriQDef ablation of ``ablations.variants``; ``training_seed``: a seed
    replica of ``seeds``; ``length_factor``: a training-length run of ``training_length``; the replicas' data and
    patch sets stay those of ``base.seed``) and record its metrics."""
    t_stage = time.perf_counter()
    validate_settings(method, cfg, variant)  # before any expensive loading
    check_training_seed(cfg, method, training_seed, variant)
    check_length_factor(cfg, method, length_factor)
    if variant and length_factor is not None:
        raise TriqdefError(f"variant {variant!r} with a length factor: expected one of the two")
    run = run_name(method, variant, training_seed, length_factor)
    train, q = scaled_training(cfg.defenses, length_factor), cfg.quant
    name = cfg.model.name
    seed = cfg.base.seed if training_seed is None else training_seed   # the training's own draws
    device = training_device(cfg.base)
    splits = pipeline.load_data(cfg)
    init = train.init
    init_path, model, init_meta = initial_model(cfg, init)
    model = model.to(device)
    total = train.total_steps(len(splits.train.labels))
    step_fn, settings = build_step(method, cfg, model, splits, total, variant, copy_bn=(init == "fp"), seed=seed)
    if method != "triqdef" and init == "fp":  # TriQDef calibrates each bit-width when BACT enables it
        calibrate_all(model, splits.holdout.images, train.batch_size, device=device)
    meta = provenance(cfg, {"kind": "defense", "method": method, "variant": variant, "run": run, "model": name,
                            "training_seed": seed,
                            "bits": list(q.bits), "first_last_bits": q.first_last_bits, "range_estimator": q.activation_range,
                            "averaging_constant": q.averaging_constant, "params": as_dict(train), "settings": settings,
                            "quant": as_dict(q), "data": pipeline.data_record(splits), "num_classes": 10,
                            "init": {"kind": init, "checkpoint": str(init_path.relative_to(paths.output_root())),
                                     "commit": init_meta.get("commit")}})
    core = not variant and training_seed is None and length_factor is None   # stage defense@<method>
    monitor = convergence_monitor(cfg, splits) if core else None
    res = fit(model, splits.train.images, splits.train.labels, train, seed=seed,
              out_path=checkpoint(method, variant, training_seed, length_factor), meta=meta,
              work_dir=pipeline.work_dir(), bits=list(q.bits), device=device, progress=progress, step_fn=step_fn,
              monitor=monitor, monitor_every=train.monitor_every, stacked=cfg.base.stacked, capture=cfg.base.compile)
    accs = {str(b): accuracy(model, splits.test.images, splits.test.labels, bits=b) for b in q.bits}
    last = res["history"][-1] if res["history"] else {}
    metrics = {"run": run, "method": method, "variant": variant, "training_seed": seed, "length_factor": length_factor,
               "model": name,
               "test_accuracy": accs,
               "n_test": int(splits.test.labels.numel()), "steps": res["steps"], "wall_time_s": res["wall_time_s"],
               "train_images_per_s": res["images_per_s"], "ms_per_step": 1000 * res["wall_time_s"] / max(res["steps"], 1),
               "last_step": last, "settings": settings, "data": pipeline.data_record(splits),
               "monitor_s": round(res.get("monitor_s", 0.0), 1), "bact_calibrations": bact_calibrations(step_fn),
               "inner_attack": inner_attack_success(res["history"], q.bits),
               "passes_per_bit": res.get("passes"),
               "profile": cfg.base.profile, "stage_wall_time_s": round(time.perf_counter() - t_stage, 1)}
    file = f"{run_folder(variant, training_seed, length_factor)}/{run}"  # headline numbers for `dvc metrics`
    root = run_root(training_seed, length_factor)
    write_metrics(file, {**{f"acc_{b}bit": a for b, a in accs.items()}, "n_test": metrics["n_test"], "steps": res["steps"],
                         "stage_wall_time_s": metrics["stage_wall_time_s"]}, provenance(cfg, metrics), results=root)
    write_curve(file, res["history"], results=root)
    if core:  # an output of defense@<method>: the header alone when the monitor is off
        write_curve(f"{file}_convergence", res.get("monitor") or [])
    log.info("%s: %s", run, {b: f"{100 * a:.1f}%" for b, a in accs.items()})
    return metrics
