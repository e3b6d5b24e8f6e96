"""Stage ``cross_bit``: cross-bit transfer inside each defended model (issue 30, item 1; docs/design.md#cross-bit-transfer).

TriQDef's title claim is that a patch made on one bit-width of the shared backbone should not transfer to its other
bit-widths. For every defended model of the ``defense`` stages (standard QAT, PBAT, DWQ, QADT-R, TriQDef):

1. ``cross_bit.patches`` LAVAN patches (one per class at 10) are made white-box on the model itself at each source
   bit-width of ``cross_bit.source_bits``, ``cross_bit.steps`` steps (the attack-strength stage's budget) on
   ``patches.attack_images`` training images, best of ``cross_bit.restarts`` starts; the same targets and starts
   for every model and source, so that the patches pair by target (:func:`triqdef.eval.cross_bit.source_patches`);
2. each patch is evaluated at every bit-width of the model on the first ``cross_bit.test_images`` test images, one
   outcome-store row per (patch, image): ``results/outcomes/cross_bit.parquet``
   (:mod:`triqdef.eval.outcome_store`), from which everything below is computed, here and again in ``triqdef report``;
3. the table ``cross_bit_matrix``: each (source, target) ASR with its interval, patches and images; the figure
   ``cross_bit_transfer``: one heatmap per model;
4. the table ``cross_bit_ratios``: the transfer ratio r(s, t) = ASR(s → t) / ASR(s → s) of TriQDef against each
   baseline (standard QAT, PBAT) at every off-diagonal (s, t), paired on common images, with the familywise
   verdict of "TriQDef cuts cross-bit transfer" (:func:`triqdef.eval.cross_bit.cuts_transfer`).

Bad ``cross_bit.source_bits`` (empty, a repeat, a bit-width a model lacks) end with one line before any patch is
made; nothing is written.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import torch

from triqdef import paths

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant", "patches", "cross_bit")
#: Salt of the training images the patches are optimised on (the int8 stage and Table 5 use their own).
ATTACK_IMAGES_SALT = 33
#: The claim's model and the baselines it is decided against (issue 30: standard QAT and PBAT).
MODEL, BASELINES = "TriQDef", ("Standard QAT", "PBAT")
#: Bootstrap replicates of every interval.
N_BOOT = 2000


def store_path():
    return paths.results_dir() / "outcomes" / "cross_bit.parquet"


def off_diagonal(sources, targets) -> list[tuple[int, int]]:
    """Every (source, target) pair with target != source, sources and targets from high to low bit-width."""
    return [(s, t) for s in sorted(sources, reverse=True) for t in sorted(targets, reverse=True) if t != s]


def ratio_table(store: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The comparison of transfer ratios, TriQDef against each baseline, from the outcome store alone: one row per
    (baseline, source, target), and the verdicts {baseline: verdict, "overall": verdict}. The overall verdict is
    Holm's over every comparison of both baselines (it holds when each one holds)."""
    from triqdef.eval import cross_bit

    sources = sorted({int(s.split("@")[1]) for s in store["set"].unique()}, reverse=True)
    pairs = off_diagonal(sources, store["bits"].unique())
    frames, verdicts = [], {}
    for baseline in BASELINES:
        verdict, rows = cross_bit.cuts_transfer(store, MODEL, baseline, pairs, n_boot, seed)
        verdicts[baseline] = verdict
        frames.append(rows.assign(baseline=baseline))
    table = pd.concat(frames, ignore_index=True)
    verdicts["overall"] = familywise(table)
    return table[["baseline"] + [c for c in table.columns if c != "baseline"]], verdicts


def familywise(table: pd.DataFrame, alpha: float = 0.025) -> str:
    """The verdict over every row of a :func:`ratio_table`: *holds* when each comparison holds at one-sided level
    ``alpha`` (intersection-union), *does not hold* when Holm's procedure over the rows' ``p_fails`` rejects one,
    otherwise inconclusive (:func:`triqdef.eval.intervals.familywise_verdict`, from the stored p-values)."""
    from triqdef.eval.intervals import HOLDS, INCONCLUSIVE, holm_verdict

    return holm_verdict([HOLDS if p <= alpha else INCONCLUSIVE for p in table["p_holds"]], list(table["p_fails"]), alpha)


def deciding_regime() -> tuple[str, int]:
    """The regime REPORT decides in (the matched size when the patch stage made it, else the paper's) and its
    LAVAN patch size, read from the patch file."""
    from triqdef.attacks.patchsets import MATCHED, PAPER, load_patchset, regime_set, select

    all_patches, _ = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    regime = MATCHED if select(all_patches, regime_set("seen", MATCHED)) else PAPER
    return regime, select(all_patches, regime_set("seen", regime), "lavan")[0].size


def attack_images(cfg, splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``patches.attack_images`` training images (and labels) the cross-bit patches are optimised on, drawn
    with ``base.seed`` and :data:`ATTACK_IMAGES_SALT`: the same for every model (the replicas' too)."""
    train = splits.train
    rng = np.random.default_rng([cfg.base.seed, ATTACK_IMAGES_SALT])
    idx = torch.from_numpy(rng.choice(len(train.labels), size=min(cfg.patches.attack_images, len(train.labels)),
                                      replace=False))
    return train.images[idx], train.labels[idx]


def run_cross_bit(cfg, progress: bool = True) -> dict:
    """Stage ``cross_bit``: the outcome store, the tables ``cross_bit_matrix`` and ``cross_bit_ratios``, the figure
    ``cross_bit_transfer`` and the metrics ``cross_bit``."""
    from tqdm.auto import tqdm

    from triqdef import quant
    from triqdef.eval import cross_bit, outcome_store
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance, write_metrics
    from triqdef.reporting import plots
    from triqdef.reporting.cross_bit_figure import transfer_heatmaps
    from triqdef.reporting.tables import save_figure, save_table
    from triqdef.stages import common
    from triqdef.stages.defense import defended_models

    start = time.perf_counter()
    cb = cfg.cross_bit
    cross_bit.check_bits_in(cfg.quant.bits, cb.source_bits, "cross_bit.source_bits", "quant.bits")   # before any load
    torch.manual_seed(cfg.base.seed)
    models, _ = defended_models(cfg.model.name)
    sources = {label: cross_bit.check_bits(m, cb.source_bits, "cross_bit.source_bits") for label, m in models.items()}
    splits = common.load_data(cfg)
    test_x, test_y = first_test_images(splits, cb.test_images, "cross_bit.test_images")
    regime, size = deciding_regime()
    seed = cfg.base.seed
    attack_x, attack_y = attack_images(cfg, splits)
    patch_cfg = dataclasses.replace(cfg.patches, size=size)
    frames, seconds = [], {}
    bar = tqdm(total=len(models) * len(cb.source_bits), desc="cross-bit patches", unit="source", disable=not progress)
    for label, model in models.items():
        tick = time.perf_counter()
        made = cross_bit.source_patches(model, sources[label], attack_x, attack_y, cb.patches, patch_cfg, cb.steps,
                                        seed, label, restarts=cb.restarts, progress=lambda s: bar.update(1))
        frames.append(cross_bit.outcome_rows(model, label, seed, made, test_x, test_y, quant.model_bits(model)))
        seconds[label] = round(time.perf_counter() - tick, 1)
    bar.close()
    store = pd.concat(frames, ignore_index=True)
    outcome_store.write(store, store_path())
    matrix = pd.concat([cross_bit.transfer_matrix(store, label, N_BOOT, seed) for label in models], ignore_index=True)
    ratios, verdicts = ratio_table(store, N_BOOT, seed)
    meta = provenance(cfg, {"data": common.data_record(splits), "regime": regime, "patch_size": size,
                            "n_eval": len(test_y), "patches_per_source": cb.patches, "source_bits": list(cb.source_bits),
                            "steps": cb.steps, "restarts": cb.restarts, "attack_images": len(attack_y),
                            "seconds_per_model": seconds, "verdicts": verdicts, "store": str(store_path().name)})
    scale = (f"{cb.patches} LAVAN patches ({size}×{size}, {regime} regime; one per class at 10) made white-box on "
             f"each model at each source bit-width, {cb.steps} steps on {len(attack_y)} training images, best of "
             f"{cb.restarts} start(s), the same targets and starts for every model and source")
    save_table(matrix, "cross_bit_matrix", meta, caption=(
        f"Cross-bit transfer inside each defended model: targeted ASR (%) of {scale}, evaluated at every bit-width "
        f"of the same model on the first {len(test_y)} test images (each patch on its own eligible images: "
        f"clean-correct at that bit-width, label ≠ target; 95 % studentised interval over patches). The diagonal "
        f"(source = target) is the white-box attack at that bit-width. Profile `{cfg.base.profile}`; one training "
        "seed."))
    save_table(ratios, "cross_bit_ratios", meta, floatfmt=".3f", caption=(
        "Transfer ratio r(s, t) = ASR(s → t) / ASR(s → s) of TriQDef against each baseline, and the difference "
        "r_TriQDef − r_baseline with its 95 % interval (paired: the four rates on the images eligible at both "
        "bit-widths of both models, patches paired by target; studentised over patches). 'TriQDef cuts cross-bit "
        "transfer' needs the difference below 0 at every pair, decided familywise (Holm): "
        + "; ".join(f"against {b}: {verdicts[b]}" for b in BASELINES) + f"; both: {verdicts['overall']}. "
        f"Profile `{cfg.base.profile}`; one training seed."))
    plots.use_style()
    save_figure(transfer_heatmaps(matrix), "cross_bit_transfer")
    wall = time.perf_counter() - start
    diag = matrix[matrix["source_bits"] == matrix["target_bits"]]
    headline = {"whitebox_asr": {f"{r.model} {r.source_bits}-bit": round(r.asr, 2) for r in diag.itertuples()},
                "verdicts": verdicts, "stage_wall_time_s": round(wall, 1)}
    write_metrics("cross_bit", headline, meta)
    return headline
