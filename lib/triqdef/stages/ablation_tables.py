"""Stage ``ablation_tables`` (notebook ``03_ablations``): Table 7 (without FDP, without GPDP) and Table 13 (sensitivity).

Paper section 4.5 and appendix C. Reads the full TriQDef model of the
``defense`` stage and the variants of the ``ablations`` stage (each the same
run with some ``triqdef`` parameters overridden: ``ablations.variants``;
``ablations.run`` selects them per profile), evaluates them on the patch sets
of ``patches``, and writes the two tables and ``results/metrics/ablation_tables.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef import paths
from triqdef.reporting import schemas as S
from triqdef.stages.common import NotebookInputs

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "robustness", "ablations", "regimes")

#: The runs of Table 7 (``full``: the ``defense`` stage's TriQDef); Table 13's grid is every other variant run.
TABLE7_RUNS = tuple(S.T7_LABELS)
#: Table 13's description of the full model's setting.
DEFAULT_SETTING = "default (α, β) = (0.5, 1.0), (λ_FDP, λ_GPDP) = (0.8, 0.5)"
#: Settings the full model reports in Table 7's print-out (its speed settings).
SPEED_SETTINGS = ("gpdp_every", "downsample", "gpdp_sub_batch")


@dataclass(kw_only=True)
class Inputs(NotebookInputs):
    """:class:`~triqdef.stages.common.NotebookInputs` and the full TriQDef model with the variants this profile trained."""

    runs: list[str]  # the variants of ablations.run
    models: dict[str, nn.Module]  # "full" and each variant
    metas: dict[str, dict]
    patch_meta: dict  # the patch file's metadata (regimes, the unseen-bit-width patches' source)

    @property
    def bits(self) -> list[int]:
        return list(self.cfg.robustness.bits)

    def describe(self) -> str:
        return f"profile {self.profile}; variants {self.runs}; {self.n_eval} test images"


def load(cfg) -> Inputs:
    """Data, the full TriQDef model and the variants of ``ablations.run``, the patch sets."""
    from triqdef.attacks.patchsets import load_patchset
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.stages.defense import checkpoint
    from triqdef.stages.devices import to_device
    from triqdef.training.loop import model_from_checkpoint, resolve_device

    device = resolve_device(cfg.base.device)
    splits = common.load_data(cfg)
    name = cfg.model.name
    test_x, test_y = first_test_images(splits, cfg.robustness.test_images, "robustness.test_images")
    runs = list(cfg.ablations.run)
    models, metas = {}, {}
    models["full"], metas["full"] = model_from_checkpoint(checkpoint("triqdef"), kind="defense", model_name=name)
    for v in runs:
        models[v], metas[v] = model_from_checkpoint(checkpoint("triqdef", v), kind="defense", model_name=name)
    to_device(models.values(), device)
    patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    meta = provenance(cfg, {"data": common.data_record(splits), "n_eval": len(test_y), "device": str(device),
                            "variants": {v: cfg.ablations.variants[v] for v in runs},
                            "checkpoints": {k: m.get("commit") for k, m in metas.items()}})
    return Inputs(cfg=cfg, splits=splits, runs=runs, models=models, metas=metas, patches=patches,
                  test_x=test_x, test_y=test_y, meta=meta, patch_meta=patch_meta)


# --------------------------------------------------------------------------- Table 7


def speed_settings(inp: Inputs) -> dict:
    """The full model's speed settings (GPDP every n-th step, map downsampling, GPDP sub-batch)."""
    return {k: inp.metas["full"]["settings"].get(k) for k in SPEED_SETTINGS}


def table7_ablation(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 7: targeted ASR (%) of the seen and unseen patch sets on TriQDef without FDP, without GPDP, in full,
    and (when trained) in full without the speed settings, at ``robustness.bits``, each with its 95 % interval;
    ``regime``: the paper's patch size or the matched size (table ``table7_ablation_matched``)."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import outcome_store, robustness
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table7_ablation", "table7_comparisons"], regime, stores=[store_path(regime)])
    models = {S.T7_LABELS[k]: inp.models[k] for k in TABLE7_RUNS if k in inp.models}
    sets = {S.SEEN: select(inp.patches, regime_set("seen", regime))}
    sets.update({k: select(inp.patches, regime_set(k, regime)) for k in robustness.UNSEEN_SETS})
    records = robustness.defense_records(models, sets, inp.bits, inp.test_x, inp.test_y)
    t7 = robustness.asr_table(records, S.GROUP, [S.bit_view(b) for b in inp.bits])
    store = outcome_store.write_records(records, inp.cfg.base.seed, inp.test_y.cpu().numpy(), store_path(regime),
                                       info={"regime": regime, "patch_size": regime_size(inp, regime),
                                             "profile": inp.profile})
    table7_comparisons(inp, store, regime)
    save_table(t7, regime_table("table7_ablation", regime), dict(inp.meta, regime=regime),
               caption=(f"Targeted ASR (%) of the seen and unseen {regime_label(inp, regime)} patch sets on TriQDef "
                        "without FDP (λ_FDP = 0), without GPDP "
                        f"(λ_GPDP = 0) and in full, {inp.n_eval} test images, profile `{inp.profile}`; the last row (when trained) "
                        "turns off the speed settings (GPDP every step, maps at full resolution). Paper Table 7 (ResNet-56, LAVAN, "
                        "32/5/4/2): w/o FDP 65.2 / 61.1 / 59.7 / 55.9 (seen and unseen rows identical in the paper), "
                        "w/o GPDP seen 43.2 / 41.7 / 39.4 / 37.6, full seen 32.4 / 30.2 / 28.4 / 26.2. Outcomes: "
                        f"results/outcomes/{store_path(regime).name}. "
                        + robustness.evaluation_sets_note(inp.patches, inp.patch_meta, regime)))
    return t7


#: Table 7's paired comparisons: full TriQDef against each ablation ("full TriQDef's ASR is lower").
TABLE7_PAIRS = ((S.FULL, S.NO_FDP), (S.FULL, S.NO_GPDP), (S.FULL, S.FULL_SLOW))  # the last: the speed settings' effect


def store_path(regime: str):
    """Table 7's outcome store in ``regime``: ``results/outcomes/table7[_matched].parquet``."""
    from triqdef.stages.regimes import regime_table

    return paths.results_dir() / "outcomes" / f"{regime_table('table7', regime)}.parquet"


def comparisons(store, seed: int = 0) -> pd.DataFrame:
    """Full TriQDef's ASR minus each ablation's (:data:`TABLE7_PAIRS`) from Table 7's outcome store: the same
    patches on the images eligible for both models, studentised over patches, with the verdict on "full TriQDef
    is lower" and its one-sided p-values (:func:`triqdef.eval.defense_claims.comparisons`). ``triqdef report``
    calls it again on the store."""
    from triqdef.eval import defense_claims

    return defense_claims.comparisons(store, TABLE7_PAIRS, groups=(S.SEEN, S.UNSEEN), seed=seed)


def table7_comparisons(inp: Inputs, store: pd.DataFrame, regime: str) -> pd.DataFrame:
    """Save :func:`comparisons` of Table 7's store as table ``table7_comparisons``."""
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import regime_label, regime_table

    comp = comparisons(store, inp.cfg.base.seed)
    save_table(comp, regime_table("table7_comparisons", regime), dict(inp.meta, regime=regime),
               caption=(f"Full TriQDef's targeted ASR minus each ablation's (points), {regime_label(inp, regime)} patches, "
                        f"the same patches on the images eligible for both models of the {inp.n_eval} test images (n "
                        "images): 95% interval studentised over patches, the verdict on 'full TriQDef is lower' and "
                        "its one-sided p-values (for Holm)."))
    return comp


# --------------------------------------------------------------------------- Table 13


def sensitivity_grid(runs: Sequence[str], variants: Mapping[str, Mapping]) -> dict[str, str]:
    """Table 13's rows: ``full`` (the default setting) and every run variant that is not a Table 7 run, each
    with its overrides written out (``"alpha = 1.0, beta = 0.5"``)."""
    grid = {"full": DEFAULT_SETTING}
    grid.update({v: ", ".join(f"{k} = {x}" for k, x in variants[v].items()) for v in runs if v not in TABLE7_RUNS})
    return grid


def sensitivity_table(models: Mapping[str, nn.Module], grid: Mapping[str, str], bits: Sequence[int], patches: Sequence,
                      clean_images: torch.Tensor, clean_labels: torch.Tensor, images: torch.Tensor,
                      labels: torch.Tensor, adv_outcomes: dict | None = None,
                      records_out: list | None = None) -> pd.DataFrame:
    """Table 13: for each model of ``grid`` three rows at each of ``bits``: ``Clean`` accuracy (%) on
    ``clean_images`` (every test image, as Table 4), ``Adv`` accuracy (%) with each of ``patches`` pasted
    (mean over them), and their targeted ``ASR`` (%), on ``images``. ``adv_outcomes``: a dict that receives the
    per-image outcomes behind each ``Adv`` cell, ``{(variant, bits): Outcomes}``; ``records_out``: a list that
    receives the patch records behind them (:func:`triqdef.eval.robustness.defense_records`, for the outcome store)."""
    from triqdef.eval import robustness
    from triqdef.eval.accuracy import accuracy

    rows = []
    for v, desc in grid.items():
        # the patches are pasted once per (model, bit-width): the ASR row and the Adv row read the same records
        patched = {b: robustness.defense_records({v: models[v]}, {S.SEEN: list(patches)}, [b], images, labels)
                   for b in bits} if patches else {}
        if records_out is not None:
            records_out.extend(patched.values())
        for setting in S.T13_METRICS:
            row = {S.VARIANT: v, S.SETTING: desc if setting == S.CLEAN else "", S.METRIC: setting}
            for b in bits:
                if setting == S.CLEAN:
                    row[S.accuracy_column(b)] = 100 * accuracy(models[v], clean_images, clean_labels, bits=b)
                elif not patches:
                    row[S.accuracy_column(b)] = float("nan")
                elif setting == S.ADV:
                    o = robustness.robust_outcomes(patched[b])
                    row[S.accuracy_column(b)] = 100 * o.rate()
                    if adv_outcomes is not None:
                        adv_outcomes[(v, b)] = o
                else:
                    row[S.accuracy_column(b)] = patched[b]["asr"].mean()
            rows.append(row)
    return pd.DataFrame(rows)


def table13_store_path(regime: str):
    """Table 13's outcome store in ``regime``: ``results/outcomes/table13[_matched].parquet``."""
    from triqdef.stages.regimes import regime_table

    return paths.results_dir() / "outcomes" / f"{regime_table('table13', regime)}.parquet"


def table13_sensitivity(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 13: clean accuracy, accuracy under the seen LAVAN patches and their ASR for the default setting and
    each sensitivity variant this profile trained; ``regime`` as in :func:`table7_ablation`. Every (variant,
    bit-width, patch, image) outcome goes to Table 13's outcome store, from which its claims are computed
    (:func:`table13_claims`), here and by ``triqdef report``."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import outcome_store
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table13_sensitivity"], regime, stores=[table13_store_path(regime)])
    grid = sensitivity_grid(inp.runs, inp.cfg.ablations.variants)
    seen_lavan = select(inp.patches, regime_set("seen", regime), "lavan")
    records: list = []
    t13 = sensitivity_table(inp.models, grid, inp.bits, seen_lavan, inp.splits.test.images, inp.splits.test.labels,
                            inp.test_x, inp.test_y, records_out=records)
    if records:
        store = outcome_store.write_records(pd.concat(records, ignore_index=True), inp.cfg.base.seed,
                                            inp.test_y.cpu().numpy(), table13_store_path(regime),
                                            info={"regime": regime, "patch_size": regime_size(inp, regime),
                                                  "profile": inp.profile, "settings": grid})
        claims = table13_claims(store, inp.cfg.base.seed)
    else:   # no seen LAVAN patch (patches.attacks without lavan): the Adv rows stay empty, and so does the store
        outcome_store.write(outcome_store.empty(), table13_store_path(regime),
                            info={"regime": regime, "absent": "no seen LAVAN patch in this regime"})
        claims = []
    save_table(t13, regime_table("table13_sensitivity", regime), dict(inp.meta, regime=regime, claims=claims),
               caption=caption_with_claims(f"Clean accuracy ({len(inp.splits.test.labels)} test images, as Table 4), robust accuracy under the seen "
                        f"{regime_label(inp, regime)} "
                        f"LAVAN patches ('Adv') and their targeted ASR (%) ({inp.n_eval} test images), profile `{inp.profile}` "
                        f"(reduced grid: {', '.join(grid)}). Paper Table 13 has two rows "
                        "for the default configuration, (α, β) = (0.5, 1.0) and (λ_FDP, λ_GPDP) = (0.8, 0.5), with different numbers, "
                        "and its (1.0, 0.5) row equals its (0.8, 0.5) row. Outcomes: "
                        f"results/outcomes/{table13_store_path(regime).name}.", claims))
    return t13


def table13_claims(store: pd.DataFrame, seed: int) -> list[dict]:
    """Appendix C's "the default setting is the most balanced", read as: under the seen LAVAN patches, ``full``'s
    robust accuracy (mean over the store's bit-widths and patches) is higher than each other variant's, from Table
    13's outcome store. Paired intervals: the same patches and images for both, each (bit-width, patch) one
    resampled unit, studentised over them (:func:`triqdef.eval.intervals.difference`, as every patch comparison),
    with one-sided p-values for Holm over the variants. No claim without ``full`` and another variant."""
    from triqdef.eval import outcome_store
    from triqdef.eval.defense_claims import evidence
    from triqdef.eval.intervals import Outcomes, difference
    from triqdef.eval.transfer import N_BOOT

    bits = sorted(store["bits"].unique(), reverse=True)

    def stacked(v):
        parts = [outcome_store.robust_outcomes(store, model=v, bits=int(b)) for b in bits]
        return Outcomes(np.concatenate([o.hits for o in parts]), np.concatenate([o.eligible for o in parts]))

    variants = list(dict.fromkeys(store["model"]))
    if "full" not in variants:
        return []
    full = stacked("full")
    return [evidence(f"robust accuracy under seen LAVAN, full − {v} (points, mean over bit-widths)",
                     difference(full, stacked(v), N_BOOT, seed, method="t"), "higher", 0.0, topic="table13", variant=v)
            for v in variants if v != "full"]


# --------------------------------------------------------------------------- stage metrics


def metrics(inp: Inputs, table7: pd.DataFrame, table13: pd.DataFrame, wall_time_s: float) -> tuple[dict, dict]:
    """The stage's headline (Table 7's unseen LAVAN ASR per model and bit-width in the deciding regime, whose
    Tables 7 and 13 ``table7`` and ``table13`` are; the wall time) and the details
    (Tables 7 and 13 as records, provenance)."""
    from triqdef.stages.regimes import deciding_regime

    t7 = table7.set_index([S.MODEL, S.GROUP])
    cols = S.attack_columns(t7.columns, S.LAVAN)
    runs = {label: run for run, label in S.T7_LABELS.items()}
    headline = {f"unseen_lavan_mean_{runs.get(m, m)}": float(t7.loc[(m, g), cols].mean())  # over bit-widths; one column a run
                for m, g in t7.index if g == S.UNSEEN}
    headline["stage_wall_time_s"] = round(wall_time_s, 1)
    details = {"profile": inp.profile, "regime": deciding_regime(inp), "table7": table7.to_dict(orient="records"),
               "table13": table13.to_dict(orient="records"), "provenance": inp.meta}
    return headline, details
