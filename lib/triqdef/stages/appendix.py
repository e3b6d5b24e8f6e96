"""Stage ``appendix`` (notebook ``04_appendix``): paper appendix C and section 4.4 on CIFAR-10, and QADT-R.

From the defended models of the ``defense`` stages, the patch sets of ``patches``, the standard-QAT models of
``train_qat`` and the second architecture of ``cross_arch``, this module builds and saves

* Table 16: DPR (Chen et al. 2022), the deformable patch, made by the one patch optimiser's ``dpr`` recipe:
  a ``seen`` set made on the FP model and an ``unseen_bits2`` set made on the independent standard-QAT model at
  2 bits (the same sources as Table 5's seen and unseen-bit-width sets), at the matched size (the paper's 6×6
  when the patch stage made no matched regime), evaluated on every defended model at ``robustness.bits``, with
  95 % intervals and TriQDef's paired comparisons;
* Table 6 in our terms: robust accuracy under the seen LAVAN patches at 32 and 2 bits of every training-time
  defense, and of a Jedi-style preprocessing (:mod:`triqdef.eval.jedi`) in front of standard QAT and in front of
  TriQDef; DiffPure needs a pretrained diffusion model that is not available offline (a row says so);
* Table 14: LAVAN across the CIFAR architectures this profile trains (ResNet-20: standard QAT and TriQDef;
  the ``cross_arch`` model: standard QAT), each on patches made on its own FP model;
* the QADT-R comparison: QADT-R beside TriQDef, PBAT and DWQ (clean accuracy and Table 5's seen, unseen and
  white-box LAVAN rows), read from the ``training`` stage's tables.

Everything runs at the profile's scale (``appendix`` params); the captions say what is reduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch.nn as nn

from triqdef import paths
from triqdef.errors import TriqdefError
from triqdef.reporting import schemas as S
from triqdef.stages.common import NotebookInputs

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant", "train_fp", "train_qat", "robustness", "patches", "cross_arch", "appendix")

#: Seed offset of the DPR patches: a block of its own (patch seeds are ``base.seed·100003 +`` an offset: stage
#: ``patches`` below 30,000, Table 2's set 30,000, Table 9's 40,000, cross-architecture 50,000, Table 1's per-image
#: protocol 60,000, attack strength 70,000, PatchAttack 80,000, white-box 90,000).
DPR_SEED_OFFSET = 75_000
#: Table 6's bit-widths (the paper's 32 and 2 bits).
TABLE6_BITS = (32, 2)
#: Table 6 rows: the Jedi-style preprocessing in front of these defended models.
JEDI_ON = (S.STANDARD_QAT, S.TRIQDEF)


@dataclass(kw_only=True)
class Inputs(NotebookInputs):
    """:class:`~triqdef.stages.common.NotebookInputs` with the defended models, the independent standard-QAT model
    (the unseen-bit-width source) and the FP model."""

    models: dict[str, nn.Module]
    metas: dict[str, dict]
    fp: nn.Module
    independent_qat: nn.Module
    patch_meta: dict

    @property
    def bits(self) -> list[int]:
        return list(self.cfg.robustness.bits)

    def describe(self) -> str:
        return (f"profile {self.profile}; data {self.splits.source['source']}; {self.n_eval} test images "
                f"(appendix.test_images); defended models {list(self.models)}; evaluation bits {self.bits}")


def load(cfg) -> Inputs:
    from triqdef.attacks.patchsets import load_patchset
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.stages.defense import defended_models
    from triqdef.stages.devices import to_device
    from triqdef.training.loop import model_from_checkpoint, resolve_device

    device = resolve_device(cfg.base.device)
    splits = common.load_data(cfg)
    test_x, test_y = first_test_images(splits, cfg.appendix.test_images, "appendix.test_images")
    models, metas = defended_models(cfg.model.name)
    fp, _ = model_from_checkpoint(common.fp_checkpoint(cfg), kind="fp", model_name=cfg.model.name)
    independent, _ = model_from_checkpoint(common.qat_checkpoint(cfg, independent=True), kind="qat",
                                           model_name=cfg.model.name)
    to_device([*models.values(), fp, independent], device)
    patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    meta = provenance(cfg, {"data": common.data_record(splits), "n_eval": len(test_y), "device": str(device),
                            "checkpoints": {k: m.get("commit") for k, m in metas.items()}})
    return Inputs(cfg=cfg, splits=splits, patches=patches, test_x=test_x, test_y=test_y, meta=meta, models=models,
                  metas=metas, fp=fp, independent_qat=independent, patch_meta=patch_meta)


def _regime(inp: Inputs) -> tuple[str, int]:
    """The regime the appendix tables use: matched when the patch stage made it, else the paper's size."""
    from triqdef.attacks.patchsets import MATCHED, PAPER
    from triqdef.stages.regimes import regime_size

    size = regime_size(inp, MATCHED)
    return (MATCHED, size) if size is not None else (PAPER, regime_size(inp, PAPER))


def store_path(name: str):
    """An appendix table's outcome store: ``results/outcomes/<name>.parquet`` (``table16``, ``table14``; one regime,
    named in the store's info)."""
    return paths.results_dir() / "outcomes" / f"{name}.parquet"   # table16, table14, table6


def write_store(inp: Inputs, records: pd.DataFrame, name: str, regime: str, size: int, **info) -> pd.DataFrame:
    """The outcome store of ``records`` (issue 29, item 1), written to :func:`store_path` (``info``: more of its
    info); returns its rows."""
    from triqdef.eval import outcome_store

    return outcome_store.write_records(records, inp.cfg.base.seed, inp.test_y.cpu().numpy(), store_path(name),
                                       info={"regime": regime, "patch_size": size, "profile": inp.profile, **info})


def table16_comparisons(store, seed: int = 0) -> pd.DataFrame:
    """DPR: TriQDef's ASR minus each other defense's, seen and unseen, from Table 16's store (the same patches on
    common images; :func:`triqdef.eval.defense_claims.comparisons`). ``triqdef report`` calls it again."""
    from triqdef.eval import defense_claims

    pairs = [(S.TRIQDEF, m) for m in (S.PBAT, S.DWQ, S.QADT_R, S.STANDARD_QAT)]
    return defense_claims.comparisons(store, pairs, groups=(S.SEEN, S.UNSEEN), seed=seed)


def table14_pair(store) -> tuple[str, str]:
    """Table 14's comparison: (TriQDef, standard QAT) of the main architecture, by their store names."""
    models = set(store.frame["model"] if hasattr(store, "frame") else store["model"])
    (tq,) = [m for m in models if m.endswith(f" / {S.TRIQDEF}")]
    return tq, tq.replace(f" / {S.TRIQDEF}", f" / {S.STANDARD_QAT}")


def table14_comparisons(store, seed: int = 0) -> pd.DataFrame:
    """TriQDef's LAVAN ASR minus standard QAT's on the main architecture, from Table 14's store."""
    from triqdef.eval import defense_claims

    return defense_claims.comparisons(store, [table14_pair(store)], groups=(S.SEEN,), seed=seed)


def comparison_claims(comp: pd.DataFrame, label: str) -> list[dict]:
    """Rows of a comparisons table as claim records for a caption ("the first model's ASR is lower")."""
    return [{"statement": f"{r.view} {r.group} {label} ASR, {r.model} − {r.against} (points)", "value": r.difference,
             "low": r.low, "high": r.high, "claim": "lower than 0", "n_images": int(r.n_images),
             "n_patches": int(r.n_patches), "verdict": r.verdict, "p_holds": r.p_holds, "p_fails": r.p_fails}
            for r in comp.itertuples()]


# --------------------------------------------------------------------------- Table 16 (DPR)


def dpr_optimiser(inp: Inputs):
    """The one patch optimiser's ``dpr`` recipe with the ``appendix`` settings (images per step: ``patches``)."""
    from triqdef.attacks.universal import recipe

    a, p = inp.cfg.appendix, inp.cfg.patches
    return recipe("dpr", method=a.dpr_method, steps=a.dpr_steps, step_size=a.dpr_step_size,
                  images_per_patch=p.images_per_patch, max_batch=p.max_batch, sectors=a.dpr_sectors,
                  sharpness=a.dpr_sharpness, area_budget=a.dpr_area_budget, shape_step_size=a.dpr_shape_step_size)


def dpr_patches(inp: Inputs, progress: bool = True) -> dict[str, list]:
    """The DPR sets: ``seen`` (made on the FP model) and ``unseen_bits2`` (made on the independent standard-QAT
    model at 2 bits), ``appendix.dpr_per_set`` each with targets balanced over the classes, on the attacker's
    training images; saved to ``results/appendix/dpr_patches.pt``."""
    from triqdef.attacks.patchsets import attack_images, balanced_targets, save_patchset
    from triqdef.attacks.universal import PatchRequest, optimise_patches
    from triqdef.config import as_dict

    cfg, seed = inp.cfg, inp.cfg.base.seed
    regime, size = _regime(inp)
    images, labels, _ = attack_images(inp.splits, cfg.patches, seed)
    x = images.float() / 255
    opt = dpr_optimiser(inp)
    sources = {"seen": (inp.fp, None, "fp"), "unseen_bits2": (inp.independent_qat, 2, "independent standard QAT")}
    sets = {}
    for k, (name, (model, bits, source)) in enumerate(sources.items()):
        targets = balanced_targets(cfg.appendix.dpr_per_set, seed * 1_000 + DPR_SEED_OFFSET // 1_000 + k)
        requests = [PatchRequest(t, seed * 100_003 + DPR_SEED_OFFSET + 1_000 * k + i, cfg.patches.border)
                    for i, t in enumerate(targets)]
        made = optimise_patches(model, x, labels, size, requests, opt, bits=bits, source_model=cfg.model.name,
                                progress=f"DPR {name} {size}px ×{len(requests)}" if progress else None)
        for p in made:
            p.info.update(set=name, source=source, regime=regime)
        sets[name] = made
    save_patchset(paths.results_dir() / "appendix" / "dpr_patches.pt", [p for ps in sets.values() for p in ps],
                  dict(inp.meta, regime=regime, size=size, optimiser=opt.settings(),
                       appendix=as_dict(cfg.appendix)))
    return sets


def table16_dpr(inp: Inputs, sets: dict[str, list]) -> pd.DataFrame:
    """Table 16: targeted ASR (%) of the DPR sets on every defended model at ``robustness.bits`` (95 % intervals),
    and TriQDef's paired comparisons (``table16_comparisons``)."""
    from triqdef.eval import robustness
    from triqdef.reporting.tables import save_table

    regime, size = _regime(inp)
    rec = robustness.defense_records(inp.models, {S.SEEN: sets["seen"], "unseen_bits2": sets["unseen_bits2"]},
                                     inp.bits, inp.test_x, inp.test_y)
    views = [S.bit_view(b) for b in inp.bits]
    t16 = robustness.asr_table(rec, S.GROUP, views)
    areas = [p.info.get("mask_area", float("nan")) for ps in sets.values() for p in ps]
    meta = dict(inp.meta, regime=regime, patch_size=size, store=store_path("table16").name)
    store = write_store(inp, rec, "table16", regime, size)
    comp = table16_comparisons(store, inp.cfg.base.seed)
    claims = comparison_claims(comp[comp["against"].isin([S.PBAT, S.DWQ])], "DPR")
    save_table(t16, "table16_dpr", dict(meta, claims=claims),
               caption=(f"Targeted ASR (%) of DPR patches (deformable: texture and shape, mask area ≤ "
                        f"{inp.cfg.appendix.dpr_area_budget:g} of the {size}×{size} box, mean area "
                        f"{sum(areas) / len(areas):.2f}; {regime} regime), {inp.cfg.appendix.dpr_steps} steps, "
                        f"{len(sets['seen'])} patches per set: seen = made on the FP model, unseen = made on a "
                        f"standard-QAT model trained with another seed, at 2 bits; {inp.n_eval} test images, profile "
                        f"`{inp.profile}`; 95% bootstrap intervals over images and patches. Paper Table 16 (CIFAR-10, "
                        "6×6): PBAT 56.6 / 48.3 / 46.5 / 43.2, DWQ 87.9 / 82.4 / 77.2 / 76.4, TriQDef 35.4 / 31.7 / "
                        "30.1 / 28.8 (32 / 5 / 4 / 2 bits); unseen PBAT 81.4 …, TriQDef 42.7 …"))
    save_table(comp, "table16_comparisons", meta,
               caption=(f"DPR: TriQDef's targeted ASR minus each other model's (points), the same patches on the images "
                        f"eligible for both models of the {inp.n_eval} test images (n images), 95% interval "
                        "studentised over patches, the verdict on 'TriQDef is lower' and its one-sided p-values."))
    return t16


# --------------------------------------------------------------------------- Table 6 (preprocessing)


def jedi_settings(inp: Inputs):
    from triqdef.eval.jedi import JediSettings

    a = inp.cfg.appendix
    return JediSettings(window=a.jedi_window, bins=a.jedi_bins, threshold_std=a.jedi_threshold_std,
                        dilate=a.jedi_dilate, steps=a.jedi_inpaint_steps)


def table6_claims(store: pd.DataFrame, preprocessing: list[str], seed: int = 0) -> list[dict]:
    """Section 4.4's claim from Table 6's outcome store (``triqdef report`` calls it again): at each bit-width,
    TriQDef's robust accuracy under the seen patches above each preprocessing defense's (``preprocessing``: their
    model names in the store), the same patches and images drawn together."""
    from triqdef.eval import outcome_store
    from triqdef.eval.intervals import claim_evidence, paired_difference
    from triqdef.eval.transfer import N_BOOT

    claims = []
    for b in sorted(store["bits"].unique(), reverse=True):
        ours = outcome_store.robust_outcomes(store, model=S.TRIQDEF, bits=int(b))
        for label in preprocessing:
            d = paired_difference(ours, outcome_store.robust_outcomes(store, model=label, bits=int(b)), N_BOOT, seed)
            claims.append(claim_evidence(f"{S.bit_view(int(b))} robust accuracy, {S.TRIQDEF} − {label} (points)", d,
                                         "higher"))
    return claims


def table6_preprocessing(inp: Inputs) -> pd.DataFrame:
    """Table 6 in our terms: clean and robust accuracy (%) under the seen LAVAN patches (the appendix regime) at
    :data:`TABLE6_BITS`, each with its 95 % interval: every training-time defense, and the Jedi-style
    preprocessing in front of :data:`JEDI_ON`; DiffPure: a row that says it is out of reach offline."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import robustness
    from triqdef.eval.intervals import Outcomes, bootstrap_rate
    from triqdef.eval.jedi import JediPreprocess
    from triqdef.eval.transfer import N_BOOT
    from triqdef.reporting.tables import save_table

    regime, size = _regime(inp)
    seen = select(inp.patches, regime_set("seen", regime), S.LAVAN)
    settings = jedi_settings(inp)
    rows_in = [(m, "training", model) for m, model in inp.models.items()]
    rows_in += [(f"Jedi-style + {m}", "preprocessing", JediPreprocess(inp.models[m], settings)) for m in JEDI_ON]
    seed = inp.cfg.base.seed
    rows, records = [], []
    for label, kind, model in rows_in:
        row = {S.MODEL: label, "type": kind}
        for b in TABLE6_BITS:
            view = S.bit_view(b)
            rec = robustness.defense_records({label: model}, {S.SEEN: seen}, [b], inp.test_x, inp.test_y)
            records.append(rec)
            correct = (rec["clean_pred"].iloc[0] == inp.test_y.numpy())[None]   # clean: each image once
            acc = bootstrap_rate(Outcomes(correct, correct | True), N_BOOT, seed)
            rob = bootstrap_rate(robustness.robust_outcomes(rec), N_BOOT, seed)
            row.update({f"clean {view}": 100 * acc.value, f"clean {view} low": 100 * acc.low,
                        f"clean {view} high": 100 * acc.high, f"robust {view}": 100 * rob.value,
                        f"robust {view} low": 100 * rob.low, f"robust {view} high": 100 * rob.high})
        rows.append(row)
    rows.append({S.MODEL: "DiffPure", "type": "preprocessing (not run: needs a pretrained diffusion model, "
                                              "out of reach offline)"})
    t6 = pd.DataFrame(rows)
    preprocessing = [label for label, kind, _ in rows_in if kind == "preprocessing"]
    store = write_store(inp, pd.concat(records, ignore_index=True), "table6", regime, size, preprocessing=preprocessing)
    claims = table6_claims(store, preprocessing, seed)
    save_table(t6, "table6_preprocessing", dict(inp.meta, regime=regime, patch_size=size, jedi=vars(settings),
                                                claims=claims),
               caption=(f"Clean and robust accuracy (%) under the {len(seen)} seen LAVAN {size}×{size} patches "
                        f"({regime} regime) at {' and '.join(map(str, TABLE6_BITS))} bits, {inp.n_eval} test images, "
                        f"profile `{inp.profile}`, 95% bootstrap intervals. 'Jedi-style': local entropy in a "
                        f"{settings.window}×{settings.window} window ({settings.bins} grey levels), pixels above mean + "
                        f"{settings.threshold_std:g} std masked and dilated by {settings.dilate}, then diffusion "
                        "inpainting (Jedi's autoencoder refinement and inpainting are not reproduced). Paper Table 6 "
                        "(ImageNet ResNet-50, 32 / 2 bits): PBAT 53.4 / 37.1, DiffPure 41.7 / 19.6, JEDI 64.3 / 23.4, "
                        "TriQDef 78.3 / 65.8."))
    return t6


# --------------------------------------------------------------------------- Table 14 (architectures)


def table14_architectures(inp: Inputs) -> pd.DataFrame:
    """Table 14: targeted ASR (%) of LAVAN patches made on each architecture's FP model, on that architecture's
    standard-QAT model at each bit-width it has (and, for ResNet-20, on TriQDef), with 95 % intervals. The
    architectures are those this profile trains: ResNet-20 and ``cross_arch.model``."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import robustness
    from triqdef.reporting.tables import save_table
    from triqdef.stages import cross_arch
    from triqdef.stages.devices import device_of, to_device

    regime, size = _regime(inp)
    frames = []
    main = {f"{inp.model_name} / {S.STANDARD_QAT}": inp.models[S.STANDARD_QAT],
            f"{inp.model_name} / {S.TRIQDEF}": inp.models[S.TRIQDEF]}
    seen = select(inp.patches, regime_set("seen", regime), S.LAVAN)
    frames.append(robustness.defense_records(main, {S.SEEN: seen}, inp.bits, inp.test_x, inp.test_y))
    second = cross_arch.load_models(inp.cfg)
    to_device([second["qat"]], device_of(inp.models[S.TRIQDEF]))
    own = select(second["patches"], regime_set("cross_arch", regime), S.LAVAN)
    second_bits = [b for b in inp.bits if b in second["qat_meta"].get("bits", [])]
    frames.append(robustness.defense_records({f"{second['name']} / {S.STANDARD_QAT}": second["qat"]}, {S.SEEN: own},
                                             second_bits, inp.test_x, inp.test_y))
    rec = pd.concat(frames, ignore_index=True)
    t14 = robustness.asr_table(rec, S.GROUP, [S.bit_view(b) for b in inp.bits])
    store = write_store(inp, rec, "table14", regime, size)
    claims = comparison_claims(table14_comparisons(store, inp.cfg.base.seed), "LAVAN")
    save_table(t14, "table14_architectures", dict(inp.meta, regime=regime, patch_size=size, claims=claims,
                                                  store=store_path("table14").name),
               caption=(f"Targeted ASR (%) of LAVAN {size}×{size} patches ({regime} regime) made on each "
                        f"architecture's FP model, on its standard-QAT model (no defense) and, for {inp.model_name}, on "
                        f"TriQDef; {inp.n_eval} test images, 95% bootstrap intervals. {second['name']} has "
                        f"{len(own)} LAVAN patches (cross_arch.patches_per_attack) and only the bit-widths "
                        f"{second['qat_meta'].get('bits')} (cross_arch.bits). Not in this profile (time budget): "
                        "VGG-16-BN, VGG-19 and AlexNet (triqdef.models builds all three, but no stage trains them yet, "
                        "in any profile: README Roadmap), and TriQDef on a second architecture. Paper Table 14 (6×6): ResNet-20 no defense 87.2 / 80.7 "
                        "/ 77.3 / 74.2, TriQDef 30.2 / 27.3 / 26.9 / 22.6 (32 / 5 / 4 / 2)."))
    return t14


# --------------------------------------------------------------------------- QADT-R


def qadt_r_comparison(inp: Inputs) -> pd.DataFrame:
    """QADT-R beside TriQDef, PBAT and DWQ: clean accuracy (Table 4) and LAVAN ASR of the seen, unseen and
    white-box rows (Table 5, the appendix regime), read from the ``training`` stage's tables (not recomputed)."""
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import regime_table

    regime, size = _regime(inp)
    tables = paths.results_dir() / "tables"
    t4 = pd.read_csv(tables / "table4_defenses_clean_accuracy.csv").set_index(S.MODEL)
    t5 = pd.read_csv(tables / f"{regime_table('table5_asr', regime)}.csv")
    models = [S.QADT_R, S.TRIQDEF, S.PBAT, S.DWQ]
    rows = []
    for m in models:
        row = {S.MODEL: m, **{f"clean {c}": t4.loc[m, c] for c in t4.columns if S.is_accuracy_column(c)}}
        for group in (S.SEEN, S.UNSEEN, S.WHITEBOX):
            sel = t5[(t5[S.MODEL] == m) & (t5[S.GROUP] == group)]
            if len(sel):
                for c in S.attack_columns(t5.columns, S.LAVAN):
                    row[f"{group} {c}"] = float(sel[c].iloc[0])
        rows.append(row)
    table = pd.DataFrame(rows)
    save_table(table, "qadt_r_comparison", dict(inp.meta, regime=regime, patch_size=size),
               caption=(f"QADT-R (A-QAPA + DBWT + GIR, docs/design.md#qadt-r) beside TriQDef, PBAT and DWQ, from "
                        f"the same checkpoint and steps: clean accuracy (%) and LAVAN targeted ASR (%) of Table 5's "
                        f"seen / unseen / white-box rows ({regime} regime, {size}×{size}); intervals and paired "
                        "comparisons in table5_asr / table5_comparisons. QADT-R's abstract: ASR 'up to 25 %' lower "
                        "than PBAT and DWQ."))
    return table


# --------------------------------------------------------------------------- the int8 runtime


def int8_runtime(inp: Inputs) -> tuple[pd.DataFrame, Path]:
    """Issue 32's table ``int8_runtime`` and its figure, read from stage ``int8`` (not recomputed; the table's
    caption and claims are in ``results/tables/int8_runtime.md``)."""
    table, figure = paths.results_dir() / "tables" / "int8_runtime.csv", paths.figures_dir() / "int8_runtime.png"
    for path in (table, figure):
        if not path.exists():
            raise TriqdefError(f"{path} is missing: expected stage int8's output (dvc repro int8)")
    return pd.read_csv(table), figure


# --------------------------------------------------------------------------- stage metrics


def metrics(inp: Inputs, t16: pd.DataFrame, t6: pd.DataFrame) -> tuple[dict, dict]:
    """Headline numbers (TriQDef's DPR ASR per bit-width, seen and unseen; the wall time) and details."""
    t = t16.set_index([S.MODEL, S.GROUP])
    head = {}
    for group in (S.SEEN, S.UNSEEN):
        if (S.TRIQDEF, group) in t.index:
            for c in S.attack_columns(t16.columns, "dpr"):
                head[f"dpr_{group}_{S.view_of(c).replace('-', '')}"] = float(t.loc[(S.TRIQDEF, group), c])
    head["stage_wall_time_s"] = round(inp.wall_time_s(), 1)
    return head, {"profile": inp.profile, "n_eval": inp.n_eval, "table16": t16.to_dict(orient="records"),
                  "table6": t6.to_dict(orient="records"), "provenance": inp.meta}
