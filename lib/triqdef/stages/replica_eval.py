"""The evaluation of one replica run (a training seed or a training length; issue 30, items 5 and 7), shared by
stages ``seed_eval``, ``variant_eval`` and ``length_eval`` (docs/design.md#training-seeds, #training-length).

A replica is evaluated exactly as the core run of its method is by the core stages, on the same test images,
with the same patches and the same attack settings, so that the replica's rates and the core's differ only by the
training run:

1. Table 5's seen and unseen patch sets (the deciding regime's size), at each ``robustness.bits``, on the first
   ``robustness.test_images`` test images (as stage ``training``);
2. the cross-bit patches: ``cross_bit.patches`` LAVAN patches made white-box on the replica itself at each
   ``cross_bit.source_bits``, with the targets, starts and attack images of stage ``cross_bit``, evaluated at every
   bit-width on the first ``cross_bit.test_images`` test images (the diagonal is the white-box attack).

Both go to one outcome store, ``results/replicas/outcomes/<group>/<run>.parquet``, whose ``seed`` column is the
replica's training seed; stages ``seed_summary`` and ``length_summary`` compute every rate from it (:mod:`triqdef.stages.replicas`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch

from triqdef import paths, quant
from triqdef.errors import TriqdefError

#: What every replica evaluation reads (the two stage modules add ``seeds`` / ``training_length``).
EVAL_PARAMS = ("base", "data", "model", "quant", "patches", "robustness", "cross_bit")


def store_path(group: str, run: str) -> Path:
    """``results/replicas/outcomes/<group>/<run>.parquet`` (group ``seeds``, ``variants`` or ``length``)."""
    return paths.replicas_dir() / "outcomes" / group / f"{run}.parquet"


def metrics_name(group: str, run: str) -> str:
    """The evaluation's metrics, ``results/replicas/metrics/<group>/<run>_eval.json`` (beside the training's)."""
    return f"{group}/{run}_eval"


def evaluate_replica(cfg, method: str, training_seed: int | None = None, length_factor: float | None = None,
                     progress: bool = True, variant: str | None = None) -> dict:
    """Evaluate the replica of ``method`` with ``training_seed`` (one of ``seeds``; with ``variant``, TriQDef's
    ablation variant of ``seeds.variants`` with one of ``seeds.variant_seeds``) or ``length_factor`` (one of
    ``training_length``): write its outcome store and metrics; returns the metrics' headline."""
    from tqdm.auto import tqdm

    from triqdef.attacks.patchsets import load_patchset, regime_set, select
    from triqdef.eval import cross_bit, outcome_store, robustness
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance, write_metrics
    from triqdef.reporting import schemas as S
    from triqdef.stages import common, defense
    from triqdef.stages import cross_bit as cross_bit_stage
    from triqdef.training.loop import model_from_checkpoint

    start = time.perf_counter()
    if (training_seed is None) == (length_factor is None):
        raise TriqdefError("a replica evaluation needs a training seed or a length factor (exactly one)")
    if variant is not None and training_seed is None:
        raise TriqdefError(f"variant {variant!r}: expected a training seed (seeds.variant_seeds)")
    defense.check_training_seed(cfg, method, training_seed, variant)
    defense.check_length_factor(cfg, method, length_factor)
    cross_bit.check_bits_in(cfg.quant.bits, cfg.cross_bit.source_bits, "cross_bit.source_bits", "quant.bits")
    group = defense.run_folder(variant, training_seed, length_factor)
    run = defense.run_name(method, variant, training_seed, length_factor)
    label = S.DEFENSE_LABELS[method]
    seed = cfg.base.seed if training_seed is None else training_seed
    path = defense.checkpoint(method, variant, training_seed, length_factor)
    stage = (f"variant_seed@{variant}-{training_seed}" if variant is not None else
             f"defense_seed@{method}-{training_seed}" if training_seed is not None else
             f"defense_length@{method}-{length_factor:g}")
    if not path.is_file():
        raise TriqdefError(f"replica checkpoint {path} not found: expected the output of stage {stage}")
    model, meta = model_from_checkpoint(path, kind="defense", model_name=cfg.model.name)
    cb = cfg.cross_bit
    source_bits = cross_bit.check_bits(model, cb.source_bits, "cross_bit.source_bits")
    eval_bits = cross_bit.check_bits(model, cfg.robustness.bits, "robustness.bits")
    torch.manual_seed(cfg.base.seed)
    splits = common.load_data(cfg)
    regime, size = cross_bit_stage.deciding_regime()
    patches, _ = load_patchset(paths.results_dir() / "patches" / "patches.pt")

    # 1. Table 5's seen and unseen sets, on Table 5's images
    test_x, test_y = first_test_images(splits, cfg.robustness.test_images, "robustness.test_images")
    sets = {S.SEEN: select(patches, regime_set("seen", regime))}
    sets.update({k: select(patches, regime_set(k, regime)) for k in robustness.UNSEEN_SETS})
    records = robustness.defense_records({label: model}, sets, eval_bits, test_x, test_y)
    table5_rows = outcome_store.from_records(records, seed, test_y.cpu().numpy())

    # 2. cross-bit patches made on the replica itself, as stage cross_bit makes them
    cb_x, cb_y = first_test_images(splits, cb.test_images, "cross_bit.test_images")
    attack_x, attack_y = cross_bit_stage.attack_images(cfg, splits)
    bar = tqdm(total=len(source_bits), desc=f"{run}: cross-bit patches", unit="source", disable=not progress)
    made = cross_bit.source_patches(model, source_bits, attack_x, attack_y, cb.patches,
                                    dataclasses.replace(cfg.patches, size=size), cb.steps, cfg.base.seed, label,
                                    restarts=cb.restarts, progress=lambda s: bar.update(1))
    bar.close()
    cross_rows = cross_bit.outcome_rows(model, label, seed, made, cb_x, cb_y, quant.model_bits(model))
    store = pd.concat([table5_rows, cross_rows], ignore_index=True)
    info = {"run": run, "group": group, "method": method, "variant": variant, "training_seed": seed,
            "length_factor": length_factor,
            "regime": regime, "patch_size": size, "profile": cfg.base.profile}
    outcome_store.write(store, store_path(group, run), info=info)

    headline: dict = {}
    for b in eval_bits:
        o = outcome_store.outcomes(store, attack="lavan", set=list(robustness.UNSEEN_SETS), bits=b)
        headline[f"unseen_lavan_{b}bit"] = round(100 * o.rate(), 2)
    for s in source_bits:
        headline[f"whitebox_{s}bit"] = round(100 * outcome_store.outcomes(store, set=cross_bit.set_name(s), bits=s).rate(), 2)
    headline["stage_wall_time_s"] = round(time.perf_counter() - start, 1)
    details = provenance(cfg, dict(info, data=common.data_record(splits), checkpoint=str(path.relative_to(
        paths.output_root())), checkpoint_commit=meta.get("commit"), n_table5_images=len(test_y),
        n_cross_bit_images=len(cb_y), source_bits=source_bits, eval_bits=eval_bits, cross_bit_steps=cb.steps,
        cross_bit_patches=cb.patches, restarts=cb.restarts, store=str(store_path(group, run).relative_to(
            paths.output_root()))))
    write_metrics(metrics_name(group, run), headline, details, results=paths.replicas_dir())
    return headline
