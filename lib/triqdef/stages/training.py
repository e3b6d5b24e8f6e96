"""Stage ``training`` (notebook ``02_training``): TriQDef against standard QAT, PBAT, DWQ and QADT-R.

Paper sections 3–4 and appendix D. From the four models of the ``defense``
stages (every one a fine-tune of the same checkpoint, ``defenses.init``, for
the same steps on the same batches) and the patch sets of ``patches``, this
module builds and saves

* Table 4: clean accuracy per bit-width;
* Table 5: targeted ASR of the seen, unseen and white-box patches, with DWQ's
  random-precision inference as an extra column (and the fooling rate, and
  every unseen set on its own);
* Table 2 in the project's terms: standard QAT vs PBAT at 32 and 8 bits and
  8-bit PTQ of their 32-bit weights;
* Table 17 (training cost against multi-bit QAT) and Table 18 (the deployed
  model's inference cost);
* Figure 3 (Grad-CAM of TriQDef at fp/5/4/2 bits), the loss terms of TriQDef's
  training, and the stage metrics ``results/metrics/training.json``.

Tables 5 and 2 are made in the deciding regime first, then in the other one when
``regimes.evaluate`` is ``both`` (:mod:`triqdef.stages.regimes`). The notebook calls
one function per table or figure, in this order (the order of the computations is
part of the results: keep it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef import paths, quant
from triqdef.errors import TriqdefError
from triqdef.reporting import schemas as S
from triqdef.stages.common import NotebookInputs

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant", "robustness", "defenses", "triqdef", "pbat", "dwq", "qadt_r", "patches",
          "patch_attack", "regimes")

#: Bit-width columns of Table 4.
ACCURACY_COLUMNS = [32, 8, 5, 4, 2]
#: Models whose white-box row Table 5 adds (LAVAN optimised on the model itself).
WHITEBOX_MODELS = (S.PBAT, S.DWQ, S.QADT_R, S.TRIQDEF)
#: Models of Table 2.
TABLE2_MODELS = (S.STANDARD_QAT, S.PBAT)
#: Bit-widths of Figure 3's Grad-CAM maps (32: the fp path).
GRADCAM_BITS = [32, 5, 4, 2]
#: Images shown in Figure 3, and at most how many test images its map similarity averages over.
GRADCAM_SHOWN, GRADCAM_IMAGES = 4, 500
#: Salt of the generator that draws the white-box attacker's training images (with ``base.seed``).
WHITEBOX_IMAGES_SALT = 11
#: Salt of PatchAttack's attacker images and of its seeds (with ``base.seed``).
PATCHATTACK_SALT = 13
#: Group of Table 5's PatchAttack rows: patches found by querying each model itself (black-box).
BLACKBOX = "blackbox"


@dataclass(kw_only=True)
class Inputs(NotebookInputs):
    """:class:`~triqdef.stages.common.NotebookInputs` and the defended models with their checkpoints' metadata."""

    models: dict[str, nn.Module]  # row label (schemas.DEFENSE_LABELS) -> model
    metas: dict[str, dict]
    patch_meta: dict  # the patch file's metadata (regimes, the unseen-bit-width patches' source)
    #: rows and info of the measurement store (:mod:`.training_measures`), filled by Tables 17, 18 and Figure 3
    measures: list = field(default_factory=list)
    measures_info: dict = field(default_factory=dict)

    @property
    def bits(self) -> list[int]:
        return list(self.cfg.quant.bits)

    def describe(self) -> str:
        init = {k: m["init"] for k, m in self.metas.items()}
        steps = sorted({m["params"].get("steps") or m["params"].get("epochs") for m in self.metas.values()})
        return (f"profile {self.profile}; data {self.splits.source['source']}; {self.n_eval} test images for the patch "
                f"tables; bits {self.bits}\nevery row starts from {sorted({i['checkpoint'] for i in init.values()})} "
                f"and runs {steps} steps / epochs of the defenses recipe")


def load(cfg) -> Inputs:
    """Data, the standard-QAT, PBAT, DWQ, QADT-R and TriQDef models of the ``defense`` stages, the patch sets."""
    from triqdef.attacks.patchsets import load_patchset
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.stages.defense import defended_models
    from triqdef.stages.devices import to_device
    from triqdef.training.loop import resolve_device

    device = resolve_device(cfg.base.device)
    splits = common.load_data(cfg)
    test_x, test_y = first_test_images(splits, cfg.robustness.test_images, "robustness.test_images")
    models, metas = defended_models(cfg.model.name)
    to_device(models.values(), device)
    meta = provenance(cfg, {"data": common.data_record(splits), "n_eval": len(test_y), "device": str(device),
                            "checkpoints": {k: m.get("commit") for k, m in metas.items()},
                            "init": {k: m["init"] for k, m in metas.items()},
                            "steps": {k: m.get("steps") for k, m in metas.items()}})
    patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    return Inputs(cfg=cfg, splits=splits, models=models, metas=metas, patches=patches, test_x=test_x, test_y=test_y,
                  meta=meta, patch_meta=patch_meta)


# --------------------------------------------------------------------------- Table 4


def table4_clean_accuracy(inp: Inputs) -> pd.DataFrame:
    """Table 4: clean accuracy (%) of the defended models per bit-width, on every test image."""
    from triqdef.eval.accuracy import clean_accuracy_table
    from triqdef.reporting.tables import save_table

    t4 = clean_accuracy_table({k: (m, inp.bits) for k, m in inp.models.items()}, inp.splits.test.images,
                              inp.splits.test.labels, ACCURACY_COLUMNS)
    save_table(t4, "table4_defenses_clean_accuracy", inp.meta,
               caption=(f"Clean test accuracy (%) on {len(inp.splits.test.labels)} test images, {inp.model_name}, "
                        f"profile `{inp.profile}`. Paper Table 4 (ResNet-56): standard QAT 89.4 / 85.1 / 80.5 / 78.2, "
                        "PBAT 86.2 / 84.1 / 79.8 / 76.9, TriQDef 89.4 / 83.3 / 78.2 / 75.8 at 32 / 5 / 4 / 2 bits."))
    return t4


def clean_deviation(table4: pd.DataFrame, model: str = S.TRIQDEF, reference: str = S.STANDARD_QAT) -> dict[str, float]:
    """Clean accuracy of ``model`` minus ``reference`` per bit-width column of Table 4 (points, 2 digits)."""
    acc = table4.set_index(S.MODEL)
    return {c: round(acc.loc[model, c] - acc.loc[reference, c], 2) for c in acc.columns if S.is_accuracy_column(c)}


# --------------------------------------------------------------------------- Table 5


def whitebox_records(inp: Inputs, bits, size: int) -> list[pd.DataFrame]:
    """For each of :data:`WHITEBOX_MODELS`: LAVAN patches of ``size`` pixels optimised on the model itself over
    locations and every bit-width (``robustness.whitebox_patches`` of ``robustness.whitebox_steps`` steps, on
    training images), evaluated on that model at each of ``bits`` (group ``whitebox``)."""
    import dataclasses

    from triqdef.eval.robustness import defense_records, whitebox_patches

    seed, train, rob = inp.cfg.base.seed, inp.splits.train, inp.cfg.robustness
    rng = np.random.default_rng([seed, WHITEBOX_IMAGES_SALT])
    idx = torch.from_numpy(rng.choice(len(train.labels), size=min(inp.cfg.patches.attack_images, len(train.labels)),
                                      replace=False))
    records = []
    for label in WHITEBOX_MODELS:
        patches = whitebox_patches(inp.models[label], inp.bits, train.images[idx], train.labels[idx], rob.whitebox_patches,
                                   dataclasses.replace(inp.cfg.patches, size=size), rob.whitebox_steps, seed, label)
        records.append(defense_records({label: inp.models[label]}, {S.WHITEBOX: patches}, bits, inp.test_x, inp.test_y))
    return records


def patchattack_records(inp: Inputs, size: int) -> tuple[list[pd.DataFrame], dict]:
    """Table 5's PatchAttack columns (Yang 2020; docs/design.md#patchattack): for each defended model and each of
    ``patch_attack.bits`` (some of ``robustness.bits``), ``patch_attack.targets`` targeted patches of ``size`` pixels
    found by querying that model at that bit-width only (its texture dictionary made on our FP model), each
    evaluated on the same view (group :data:`BLACKBOX`). Returns the records and the queries used per patch (mean,
    max, budget)."""
    from triqdef.attacks.patch_attack import PatchAttackSettings, build_texture_dictionary, patch_attack
    from triqdef.attacks.patchsets import balanced_targets
    from triqdef.eval.cross_bit import check_bits_in
    from triqdef.eval.transfer import transfer_records, view_predictions
    from triqdef.stages import common
    from triqdef.training.loop import model_from_checkpoint

    pa, seed, train = inp.cfg.patch_attack, inp.cfg.base.seed, inp.splits.train
    bits = check_bits_in(inp.cfg.robustness.bits, pa.bits, "patch_attack.bits", "robustness.bits")
    settings = PatchAttackSettings(textures_per_class=pa.textures_per_class, texture_steps=pa.texture_steps,
                                   iterations=pa.iterations, actions_per_iteration=pa.actions_per_iteration,
                                   reward_images=pa.reward_images, selection_images=pa.selection_images,
                                   max_queries=pa.max_queries, border=inp.cfg.patches.border)
    rng = np.random.default_rng([seed, PATCHATTACK_SALT])
    idx = torch.from_numpy(rng.choice(len(train.labels), size=min(pa.attack_images, len(train.labels)), replace=False))
    x, y = train.images[idx].float() / 255, train.labels[idx]
    fp, _ = model_from_checkpoint(common.fp_checkpoint(inp.cfg), kind="fp", model_name=inp.model_name)
    dictionary = build_texture_dictionary(fp.eval(), x, size, 10, settings, seed * 1_000 + PATCHATTACK_SALT,
                                          source_model=f"{inp.model_name} FP")
    targets = balanced_targets(pa.targets, seed * 1_000 + PATCHATTACK_SALT)
    records, queries = [], []
    for label, model in inp.models.items():
        for b in bits:
            view = {S.bit_view(b): (model, b)}
            made = [patch_attack(model, x, y, size, t, dictionary, settings, seed * 100_003 + 80_000 + 97 * b + i,
                                 victim_bits=b, victim_name=label) for i, t in enumerate(targets)]
            queries += [p.info["queries"] for p in made]
            clean = view_predictions(view, inp.test_x)
            records.append(transfer_records(made, view, inp.test_x, inp.test_y, clean)
                           .assign(model=label, patch_set=BLACKBOX))
    return records, {"mean": float(np.mean(queries)), "max": int(max(queries)), "budget": pa.max_queries,
                     "per_model_and_bits": pa.targets, "bits": bits}


def table5_asr(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 5: targeted ASR (%) of the seen, unseen (together) and white-box patches on the four models at
    ``robustness.bits``, DWQ's random-precision inference as column ``random``, each with its 95 % interval; also
    saved: every set on its own, and the fooling rate. The PatchAttack columns stay empty (not implemented).
    ``regime``: the paper's patch size or the matched size (tables ``*_matched``)."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import robustness
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.regimes import deciding_regime, not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table5_asr", "table5_asr_by_set", "table5_fooling", "table5_comparisons"], regime,
                                  stores=[store_path(regime)])
    size = regime_size(inp, regime)
    sets = {S.SEEN: select(inp.patches, regime_set("seen", regime))}
    sets.update({k: select(inp.patches, regime_set(k, regime)) for k in robustness.UNSEEN_SETS})
    eval_bits = list(inp.cfg.robustness.bits)
    seconds, clock = {}, time.perf_counter()   # each part's wall time, in the table's metadata (the stage's budget)

    def lap(part: str) -> None:
        nonlocal clock
        seconds[part] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    rec = robustness.defense_records(inp.models, sets, eval_bits, inp.test_x, inp.test_y, random_precision=[S.DWQ],
                                     rp_bits=inp.bits, seed=inp.cfg.base.seed)
    lap("seen and unseen sets")
    from triqdef.attacks.patchsets import MATCHED
    from triqdef.eval import defense_claims, outcome_store

    deciding = regime == deciding_regime(inp)
    black, queries = patchattack_records(inp, size) if regime == MATCHED else ([], None)
    lap("patchattack: search and evaluation")
    white = whitebox_records(inp, eval_bits, size) if deciding else []
    lap("white-box: optimisation and evaluation")
    noise = robustness.defense_records(inp.models, {defense_claims.NOISE: noise_twins(sets[S.SEEN], inp.cfg.base.seed)},
                                       eval_bits, inp.test_x, inp.test_y)
    lap("noise baseline")
    rec_all = pd.concat([rec, noise] + white + black, ignore_index=True)
    store = outcome_store.write_records(rec_all, inp.cfg.base.seed, inp.test_y.cpu().numpy(), store_path(regime),
                                        info={"regime": regime, "patch_size": size, "patchattack_queries": queries,
                                              "profile": inp.profile})
    comparisons, claims = defense_claims.evaluate(store, seed=inp.cfg.base.seed)
    views = [S.bit_view(b) for b in eval_bits] + [S.RANDOM_VIEW]
    t5 = robustness.asr_table(rec_all, S.GROUP, views)
    if queries is None:  # PatchAttack runs at the matched size only (time budget): its columns stay empty here
        t5 = t5.assign(**{S.attack_column(S.PATCHATTACK, v): float("nan") for v in views[:-1]})
        pa_note = "The PatchAttack columns are in the matched-size table only (time budget). "
    else:
        pa_bits = list(inp.cfg.patch_attack.bits)
        pa_skipped = [b for b in eval_bits if b not in pa_bits]
        pa_note = (f"PatchAttack (black-box, rows '{BLACKBOX}'): {inp.cfg.patch_attack.targets} targeted patches per "
                   f"model and bit-width, each found by querying that view only (texture dictionary from our FP "
                   f"model): {queries['mean']:.0f} queries per patch on average (at most {queries['max']}, budget "
                   f"{queries['budget']}). "
                   + (f"Queried at {' / '.join(map(str, pa_bits))} bits only (patch_attack.bits in profile "
                      f"`{inp.profile}`, time budget): its {' / '.join(map(str, pa_skipped))}-bit columns stay empty. "
                      if pa_skipped else ""))
    wb_note = ("" if deciding else "The white-box rows are in the matched-size table only (time budget). ")
    cap5 = (f"Targeted ASR (%) of LAVAN / GAP {regime_label(inp, regime)} patches (seen: FP-made from the training "
            f"distribution; unseen: the five unseen sets together; whitebox: {inp.cfg.robustness.whitebox_patches} "
            f"LAVAN patches optimised on each model over locations and B = {inp.bits}; noise: a uniform random patch "
            f"of the same size, target and location as each seen patch, the chance baseline), {inp.n_eval} test "
            f"images, profile `{inp.profile}`; 95% bootstrap intervals over images and patches, each patch on its "
            "own eligible images. 'random' = random-precision inference (DWQ only). Outcomes: "
            f"results/outcomes/{store_path(regime).name}. " + wb_note + pa_note +
            "Paper Table 5 (ResNet-56, LAVAN 32/5/4/2): PBAT unseen 71.8 / 65.3 / 61.1 / 57.5, DWQ unseen 86.5 / 81.7 / 76.4 / 72.9, "
            "TriQDef unseen 35.6 / 33.3 / 29.1 / 27.3. "
            + robustness.evaluation_sets_note(inp.patches, inp.patch_meta, regime))
    lap("store, comparisons and claims")
    meta = dict(inp.meta, regime=regime, patch_size=size, seconds=seconds, whitebox_steps=inp.cfg.robustness.whitebox_steps,
                whitebox_patches=inp.cfg.robustness.whitebox_patches if deciding else 0,
                patchattack_queries=queries, store=store_path(regime).name)
    save_table(t5, regime_table("table5_asr", regime), dict(meta, claims=claims), caption=caption_with_claims(cap5, claims))
    save_table(robustness.asr_table(rec_all, S.PATCH_SET, views), regime_table("table5_asr_by_set", regime), meta,
               caption="Table 5 with every unseen set on its own (source bit-width 4 / 2, size 8 / 10 (scaled in the "
                       "matched regime), location).")
    save_table(robustness.asr_table(rec_all, S.GROUP, views, value="fooling"), regime_table("table5_fooling", regime), meta,
               caption="Untargeted fooling rate (%) of the patches of Table 5.")
    table5_comparisons(inp, comparisons, regime, meta)
    return t5


#: Section 2 / Table 2: PBAT's ASR rises "by more than 20 %" (points) on patches made at an unseen bit-width.
TABLE2_RISE = 0.20
#: Salt of the noise baseline's random patches (with ``base.seed``).
NOISE_SALT = 17


def store_path(regime: str, table: str = "table5") -> Path:
    """The outcome store of Table 5 (or ``table``: ``table2``) in ``regime``: ``results/outcomes/table5[_matched].parquet``."""
    from triqdef.stages.regimes import regime_table

    return paths.results_dir() / "outcomes" / f"{regime_table(table, regime)}.parquet"


def noise_twins(patches, seed: int) -> list:
    """The noise baseline (issue 29, item 7): for each patch a uniform random patch of the same size, target,
    location and attack label (so that it sits in that attack's columns), set ``noise``."""
    from triqdef.attacks.patches import Patch

    out = []
    for i, p in enumerate(patches):
        content = torch.rand(p.content.shape, generator=torch.Generator().manual_seed(seed * 1_000 + NOISE_SALT * 97 + i))
        out.append(Patch(content, p.location, p.target, p.attack, "uniform noise", None, {"set": "noise", "twin_of": i}))
    return out


def table5_comparisons(inp: Inputs, comparisons: pd.DataFrame, regime: str, meta: dict) -> pd.DataFrame:
    """Save the first model's ASR minus the second's for each pair of :data:`triqdef.eval.defense_claims.PAIRS`
    (table ``table5_comparisons``), computed from the outcome store on common images
    (:func:`triqdef.eval.defense_claims.comparisons`); ``triqdef report`` recomputes it from the store."""
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import regime_label, regime_table

    save_table(comparisons, regime_table("table5_comparisons", regime), meta,
               caption=(f"Targeted ASR of the first model minus the second's (points), {regime_label(inp, regime)} "
                        "patches, on the same patches and the images eligible for both models (n images: those "
                        "common images): 95% interval studentised over patches (images and patches resampled "
                        "together), the verdict on 'the first is lower' and its one-sided p-values (for Holm)."))
    return comparisons


# --------------------------------------------------------------------------- Table 2


CLIP, CLIP_LABEL = "mse", "MSE clip"  # the second activation range estimator of Tables 2 and 9 (issue 12 item 6)


def estimator_note(q, bits: int, what: str) -> str:
    """Caption words on the activation range estimators of ``what``: the trained one, and the MSE clip's columns."""
    trained = quant.estimator_for(q.activation_range, bits)
    if trained == CLIP:
        return f"{what} use the MSE clip"
    return (f"{what} use min/max observers as trained; the '({CLIP_LABEL})' columns recalibrate observers and BN of the "
            f"same weights with the MSE clip on the held-out images, so the estimator's own effect shows")


def table2_store_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Table 2's records as outcome-store rows: each view as a model and a bit-width (``PBAT`` at 32 and 8 bits;
    the PTQ views as model ``PBAT · PTQ``, the MSE-clip recalibrations with `` (MSE clip)`` after the model)."""
    models, bits = [], []
    for model, view in zip(records["model"], records["view"]):
        ptq, clip = view.startswith(S.T2_PTQ8), view.endswith(f"({CLIP_LABEL})")
        models.append(model + (" · PTQ" if ptq else "") + (f" ({CLIP_LABEL})" if clip else ""))
        bits.append(8 if ptq else int(view.split("-bit")[0]))
    return records.assign(model=models, view=[S.bit_view(b) for b in bits])


def table2_claims(store: pd.DataFrame, seed: int = 0) -> list[dict]:
    """Table 2's claim from its outcome store (section 2: PBAT's ASR rises by more than :data:`TABLE2_RISE` on
    patches made at an unseen bit-width): on PBAT at 8 bits, the ASR of the patches made on standard QAT at 2 bits
    minus that of the seen patches of the same size, the two sets' patches each on their own, the images drawn
    together (:func:`triqdef.eval.intervals.difference`). ``triqdef report`` calls it again on the store."""
    from triqdef.eval import outcome_store
    from triqdef.eval.intervals import claim_evidence, difference
    from triqdef.eval.transfer import N_BOOT

    where = {"model": S.PBAT, "bits": 8}
    d = difference(outcome_store.outcomes(store, set=S.T2_UNSEEN_2BIT, **where),
                   outcome_store.outcomes(store, set=S.T2_SEEN_SAME_SIZE, **where), N_BOOT, seed, same_patches=False,
                   method="t")
    statement = (f"PBAT {S.T2_8BIT}: '{S.T2_UNSEEN_2BIT}' − '{S.T2_SEEN_SAME_SIZE}' ASR (points), both sets the "
                 "same size")
    return [dict(claim_evidence(statement, d, "higher", TABLE2_RISE), topic="table2")]


#: Table 2's own 'made at 2 bits' set (:func:`table2_patches`): its bit-width, and its patch seeds
#: ``seed·100003 + TABLE2_SEED_OFFSET + …``, apart from every other stage's patches (stage ``patches`` below 30,000).
TABLE2_BITS, TABLE2_SEED_OFFSET = 2, 30_000


def table2_patch_file(regime: str) -> Path:
    """Where :func:`table2_patches` writes the set of ``regime``: ``results/table2/patches[_matched].pt``."""
    from triqdef.attacks.patchsets import regime_patch_file

    return regime_patch_file(paths.results_dir() / "table2", regime)


def table2_specs(seen: list, regime: str, seed: int) -> list:
    """The patches of Table 2's own set (:func:`table2_patches`): for each patch of the seen set ``seen``, in its
    order, one with its attack, size and target, made on standard QAT at :data:`TABLE2_BITS` bits inside the
    training region, with its own seed (set ``table2_bits2`` of ``regime``)."""
    from triqdef.attacks.patchsets import PatchSpec, regime_set

    offset = seed * 100_003 + TABLE2_SEED_OFFSET + (0 if regime == "paper" else 1_000)
    return [PatchSpec(regime_set(f"table2_bits{TABLE2_BITS}", regime), p.attack, p.size, "qat", TABLE2_BITS, p.target,
                      offset + i, "inside", regime) for i, p in enumerate(seen)]


def table2_patches(inp: Inputs, regime: str, progress: bool = True) -> tuple[list, float]:
    """Table 2's own 'unseen (made at 2 bits)' set (issue 29, item 4; docs/design.md#table-2-set): one patch per
    patch of the seen set of ``regime``, with its attack, size and target (so the claim's two sets are paired by
    target), made as stage ``patches`` makes ``unseen_bits2``: on the unseen-bit-width source model
    (``patches.unseen_bits_source``) at :data:`TABLE2_BITS` bits, inside the training region, from the same attacker
    images. Written to :func:`table2_patch_file` with its provenance; returns the patches and the seconds they took."""
    from triqdef.attacks.patchsets import make_and_save, regime_set, select
    from triqdef.config import as_dict
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.training.loop import model_from_checkpoint, resolve_device

    cfg, pcfg, seed = inp.cfg, inp.cfg.patches, inp.cfg.base.seed
    seen = select(inp.patches, regime_set("seen", regime))
    if not seen:
        raise TriqdefError(f"the patch file has no '{regime_set('seen', regime)}' set: expected the seen patches of "
                           "'triqdef patches make'")
    independent = pcfg.unseen_bits_source == "independent_qat"
    path = common.qat_checkpoint(cfg, independent=independent)
    if not path.is_file():
        raise TriqdefError(f"standard-QAT checkpoint {path} not found: expected the source model of the unseen-bit-width "
                           f"patches (patches.unseen_bits_source: {pcfg.unseen_bits_source}; stage train_qat)")
    source, source_meta = model_from_checkpoint(path, kind="qat", model_name=inp.model_name)
    if TABLE2_BITS not in source_meta["bits"]:
        raise TriqdefError(f"standard-QAT checkpoint {path} has bit-widths {source_meta['bits']}: expected "
                           f"{TABLE2_BITS}, the bit-width of Table 2's 'made at {TABLE2_BITS} bits' set")
    specs = table2_specs(seen, regime, seed)
    meta = provenance(cfg, {"params": as_dict(pcfg), "regime": regime, "bits": TABLE2_BITS,
                            "source": str(path.relative_to(paths.output_root())),
                            "source_checkpoint_commit": source_meta.get("commit"),
                            "data": common.data_record(inp.splits)})
    return make_and_save(specs, {"qat": source.to(resolve_device(cfg.base.device))}, inp.splits, pcfg, seed,
                         inp.model_name, table2_patch_file(regime), meta, progress)


def table2_qat_vs_pbat(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 2 in the project's terms: 8×8 / 10×10 FP-made patches and 6×6 patches made on standard QAT at 4 and
    2 bits (in the matched regime: every size scaled by the same factor), on standard QAT and PBAT at 32 bits,
    8 bits, and 8-bit PTQ of their 32-bit weights. The claim's 'made at 2 bits' side is Table 2's own set
    (:func:`table2_patches`), as large as the seen set; the other per-kind rows are stage ``patches``' sets."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import deploy, outcome_store, robustness
    from triqdef.eval.transfer import asr_by_model_and_set
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.devices import calibration_on, device_of
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table2_qat_vs_pbat"], regime, stores=[store_path(regime, "table2")])
    q, pcfg_unseen = inp.cfg.quant, inp.cfg.patches.unseen_per_kind
    views = {}
    for label in TABLE2_MODELS:
        model = inp.models[label]
        calib = calibration_on(model, inp.splits.holdout.images)
        fp32 = deploy.to_float_model(model, inp.model_name).to(device_of(model))  # built on the CPU
        ptq8 = quant.post_training_quantize(fp32, [32, 8], calib, q.first_last_bits, q.activation_range)
        views[label] = {S.T2_32BIT: (model, 32), S.T2_8BIT: (model, 8), S.T2_PTQ8: (ptq8, 8)}
        if quant.estimator_for(q.activation_range, 8) != CLIP:  # issue 12 item 6: the MSE clip's columns beside
            views[label].update({f"{S.T2_8BIT} ({CLIP_LABEL})": (quant.with_range_estimator(model, CLIP, calib), 8),
                                 f"{S.T2_PTQ8} ({CLIP_LABEL})": (quant.with_range_estimator(ptq8, CLIP, calib), 8)})
    sets = {label: select(inp.patches, regime_set(name, regime)) for label, name in S.T2_PATCH_SETS.items()}
    own, own_seconds = table2_patches(inp, regime)   # the claim's 'made at 2 bits' side: its own set, as large as seen
    sets[S.T2_UNSEEN_2BIT] = own
    records, t2 = asr_by_model_and_set(views, sets, inp.test_x, inp.test_y)
    store = outcome_store.write_records(table2_store_rows(records), inp.cfg.base.seed, inp.test_y.cpu().numpy(),
                                        store_path(regime, "table2"),
                                        info={"regime": regime, "patch_size": regime_size(inp, regime),
                                              "profile": inp.profile})
    claims = table2_claims(store, inp.cfg.base.seed)
    s0, s8, s10, s4bit, s2bit = (sets[label][0].size for label in S.T2_PATCH_SETS)
    set_names = {k: regime_set(v, regime) for k, v in S.T2_PATCH_SETS.items()} | {S.T2_UNSEEN_2BIT: own[0].info["set"]}
    cap2 = (f"Targeted ASR (%) in the project's terms of paper Table 2 ({regime_label(inp, regime)} regime): "
            f"the seen set ({s0}×{s0}, FP-made, the training pool's distribution), {s8}×{s8} / {s10}×{s10} FP-made "
            f"patches (the paper's 'seen' 8×8 / 10×10, scaled as docs/design.md#attack-regime, distinct sizes below "
            f"the largest that fits) and "
            f"{s4bit}×{s4bit} / {s2bit}×{s2bit} patches made on a standard-QAT model at 4 / 2 bits (at 2 bits, the "
            f"claim's side: Table 2's own set, {len(own)} patches, one per seen patch with its target, results/table2; "
            f"the other sets: stage patches', {pcfg_unseen} per attack, descriptive), on "
            f"standard QAT and PBAT at 32 bits, 8 bits, and 8-bit PTQ of their 32-bit weights ({estimator_note(q, 8, 'the 8-bit views')}); "
            f"{inp.n_eval} test images. Outcomes: results/outcomes/{store_path(regime, 'table2').name}. "
            f"{robustness.evaluation_sets_note(inp.patches, inp.patch_meta, regime)} "
            f"{robustness.set_targets([*inp.patches, *own], set_names)}")
    save_table(t2, regime_table("table2_qat_vs_pbat", regime),
               dict(inp.meta, regime=regime, claims=claims,
                    patches={"file": str(table2_patch_file(regime).relative_to(paths.output_root())), "n": len(own),
                             "seconds": own_seconds}),
               caption=caption_with_claims(cap2, claims))
    return t2


# --------------------------------------------------------------------------- Tables 17 and 18


def table17_training_cost(inp: Inputs) -> tuple[pd.DataFrame, dict]:
    """Table 17: time and memory of a TriQDef, DWQ, PBAT and QADT-R training step against a multi-bit QAT step
    (alternating rounds, batch ``defenses.batch_size``; ``robustness.bench_steps`` rounded up to whole GPDP cycles,
    so that TriQDef's mean holds its GPDP steps in their training share). Each step's time goes to the measurement
    store (:mod:`.training_measures`), from which the table and its ratio intervals are computed. Returns the table
    and the benchmark record (:func:`triqdef.eval.bench.train_step_benchmark`)."""
    from triqdef.defenses.steps import triqdef_settings
    from triqdef.eval.bench import train_step_benchmark
    from triqdef.reporting.tables import save_table
    from triqdef.stages import training_measures as TM
    from triqdef.stages.defense import build_step

    cfg = inp.cfg
    settings = triqdef_settings(cfg.triqdef, inp.model_name)
    cycle = max(settings.gpdp_every, 1)
    steps = -(-cfg.robustness.bench_steps // cycle) * cycle
    extra = {method: build_step(method, cfg, None, inp.splits, 1)[0] for method in ("dwq", "pbat", "qadt_r")}
    tb = train_step_benchmark(settings, inp.model_name, inp.bits, cfg.defenses.batch_size, steps=steps, warmup=1,
                              extra_steps=extra, device=cfg.base.device, range_estimator=cfg.quant.activation_range)
    inp.measures.append(TM.bench_rows(tb))
    inp.measures_info.update(peak_mb={TM.METHOD_LABELS.get(k, k): tb[f"{k}_peak_mb"] for k in TM.METHOD_LABELS
                                      if f"{k}_peak_mb" in tb},
                             batch_size=tb["batch_size"], gpdp_every=cycle, bench_device=tb["device"],
                             threads=tb["threads"], memory_measure=tb["memory_measure"])
    t17 = TM.cost_table(pd.concat(inp.measures, ignore_index=True), inp.measures_info)
    save_table(t17, "table17_training_cost", dict(inp.meta, bench={k: v for k, v in tb.items() if not k.endswith("_steps")}),
               floatfmt={S.T17_TIME_RATIO: ".2f", S.T17_MEM_RATIO: ".2f"},
               caption=(f"Training cost per step on this machine ({tb['device']}, {tb['threads']} threads), {inp.model_name}, "
                        f"bits {inp.bits} all active, batch {tb['batch_size']}, mean of {tb['steps']} alternating rounds "
                        f"(TriQDef's GPDP on 1 step in {cycle}, weighted so); time × with its 95 % paired bootstrap "
                        "interval over rounds; memory = peak bytes saved for backward. Paper Table 17 (A100, ResNet-56): "
                        "DWQ 1.05× / 1.02×, PBAT 1.52× / 1.45×, TriQDef 1.47× / 1.17×."))
    return t17, tb


def defense_run_records() -> dict[str, dict]:
    """Each defense run's record (``results/metadata/defenses/<run>.json``, written by stage ``defense``), by row label."""
    import json

    out = {}
    for run, label in S.DEFENSE_LABELS.items():
        path = paths.results_dir() / "metadata" / "defenses" / f"{run}.json"
        try:
            out[label] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise TriqdefError(f"defense record {path} is missing or corrupt ({type(err).__name__}): expected the "
                               f"JSON stage defense@{run} writes; run `dvc repro defense@{run}`") from None
    return out


def table_training_per_bit(inp: Inputs, records: dict[str, dict] | None = None) -> pd.DataFrame:
    """How much training each bit-width got (issue 30, item 4): per defense and bit-width, the optimiser steps
    whose loss it entered, and the forward and backward passes of the model at it, with the images forwarded
    (:class:`triqdef.training.passes.PassCounter`; inner attacks and BACT's calibration included, the monitor
    not)."""
    from triqdef.reporting.tables import save_table

    records = records if records is not None else defense_run_records()
    rows, missing = [], []
    zero = {"steps": 0, "forward": 0, "backward": 0, "forward_images": 0}   # a bit-width the run never ran
    for label, rec in records.items():
        passes = rec.get("passes_per_bit")
        if passes is None:
            missing.append(label)
        for b in inp.bits:
            c = {} if passes is None else passes.get(str(b), zero)
            rows.append({S.MODEL: label, "bits": b, "optimiser steps": c.get("steps"), "forward passes": c.get("forward"),
                         "backward passes": c.get("backward"), "images forwarded": c.get("forward_images"),
                         "of steps": rec.get("steps")})
    df = pd.DataFrame(rows)
    save_table(df, "training_per_bit", inp.meta, floatfmt=".0f",
               caption=("Training each bit-width got, per defense: optimiser steps whose loss it entered, forward and "
                        "backward passes of the model at it and the images they carried, counted during the run "
                        "(inner attacks, BACT's calibration and PBAT's location search included; the convergence "
                        "monitor left out). TriQDef's curriculum enables 5/4 bits after 30 % and 2 bits after 60 % of "
                        "the steps; DWQ draws one bit-width per step."
                        + (f" Not counted (a stacked or captured step): {', '.join(missing)}." if missing else "")))
    return df


def table_pbat_inner_attack(inp: Inputs, records: dict[str, dict] | None = None) -> pd.DataFrame:
    """PBAT's inner attack, measured (issue 30, item 2): per bit-width, the share of its slice of patched training
    images misclassified with the starting patches and with the optimised ones (mean over the last quarter of the
    steps), beside the attack-strength stage's white-box LAVAN ASR on the FP model at the same sizes."""
    import json

    from triqdef.reporting.tables import save_table

    records = records if records is not None else defense_run_records()
    rec = records.get(S.PBAT, {})
    inner, settings = rec.get("inner_attack") or {}, rec.get("settings") or {}
    strength_path = paths.results_dir() / "attack_strength" / "matched_size.json"
    strength = json.loads(strength_path.read_text()).get("lavan_fp_asr", {}) if strength_path.is_file() else {}
    sizes = settings.get("sizes") or []
    rows = [{"bits": int(b), "untargeted success, start (%)": v["fool_init"],
             "untargeted success, optimised (%)": v["fool"], "logged steps": v["logged_steps"]}
            for b, v in sorted(inner.items(), key=lambda kv: -int(kv[0]))]
    df = pd.DataFrame(rows)
    ref = ", ".join(f"{s} px {strength[str(s)]:.1f} %" for s in sizes if str(s) in strength) or "not measured"
    save_table(df, "pbat_inner_attack", dict(inp.meta, pbat_settings=settings),
               caption=(f"PBAT's inner attack on the model being trained (Rao et al. 2020, random location "
                        f"optimisation): {settings.get('attack_steps')} signed steps of {settings.get('step_size')} and "
                        f"moves of {settings.get('stride')} px from {settings.get('init')} patches of {sizes} px, each "
                        "bit-width attacking its own slice of the patched half; untargeted success = share of those "
                        "images misclassified (clean errors included), mean over the last quarter of the steps. For "
                        f"scale, the attack-strength stage's targeted universal LAVAN on the FP model: {ref}."))
    return df


def table18_inference_cost(inp: Inputs) -> pd.DataFrame:
    """Table 18: the deployed TriQDef model at each bit-width (32 last) against the deployed standard-QAT model,
    timed alternating on the same batch (:func:`triqdef.eval.bench.alternating_times`); every run's latency goes
    to the measurement store, the structure facts to its info, and the table is computed from them."""
    from triqdef.eval.bench import alternating_times
    from triqdef.eval.deploy import extract_bitwidth, same_structure, structure
    from triqdef.reporting.tables import save_table
    from triqdef.stages import training_measures as TM

    rob = inp.cfg.robustness
    x_lat = inp.test_x[:rob.latency_batch].float() / 255
    times, facts = {}, {}
    with torch.no_grad():
        for b in [b for b in inp.bits if b != 32] + [32]:
            dq = extract_bitwidth(inp.models[S.STANDARD_QAT], b, inp.model_name)
            dt = extract_bitwidth(inp.models[S.TRIQDEF], b, inp.model_name)
            facts[str(b)] = {"same_structure": same_structure(dt, dq), "hooks": structure(dt)["hooks"]}
            times[b] = alternating_times({S.TRIQDEF: lambda i, m=dt: m(x_lat), S.STANDARD_QAT: lambda i, m=dq: m(x_lat)},
                                         rob.latency_repeats, warmup=3)
    inp.measures.append(TM.latency_rows(times))
    inp.measures_info.update(structure=facts, latency_batch=int(len(x_lat)), latency_repeats=rob.latency_repeats)
    t18 = TM.latency_table(pd.concat(inp.measures, ignore_index=True), inp.measures_info)
    save_table(t18, "table18_inference_cost", inp.meta, floatfmt={S.T18_RATIO: ".3f"},
               caption=(f"Deployed TriQDef model at each bit-width against the deployed standard-QAT model of the same bit-width: "
                        f"structure identity and latency on a batch of {len(x_lat)} ({rob.latency_repeats} alternating runs)."))
    return t18


# --------------------------------------------------------------------------- Figure 3 and the loss terms


def figure3_gradcam(inp: Inputs) -> tuple[Path, dict[str, float]]:
    """Figure 3: Grad-CAM of TriQDef at fp/5/4/2 bits on the first test images; and the mean cosine of each
    b-bit map to the fp map of the same image over at most :data:`GRADCAM_IMAGES` test images (each image's cosine
    to the measurement store)."""
    from triqdef.eval.gradcam import cam_cosine_items, grad_cam
    from triqdef.reporting.plots import gradcam_grid
    from triqdef.stages import training_measures as TM
    from triqdef.reporting.tables import save_figure
    from triqdef.stages.devices import device_of

    model = inp.models[S.TRIQDEF]
    device = device_of(model)
    xs, ys = inp.test_x[:GRADCAM_SHOWN].float() / 255, inp.test_y[:GRADCAM_SHOWN]  # stay on the CPU for the plot
    maps = {b: grad_cam(model, xs.to(device), ys.to(device), b) for b in GRADCAM_BITS}
    path = save_figure(gradcam_grid(xs, ys, maps), "figure3_gradcam_triqdef")
    n_cam = min(GRADCAM_IMAGES, inp.n_eval)
    xc, yc = (inp.test_x[:n_cam].float() / 255).to(device), inp.test_y[:n_cam].to(device)
    cosines = cam_cosine_items(model, xc, yc, GRADCAM_BITS[1:], reference_bits=GRADCAM_BITS[0])
    inp.measures.append(TM.gradcam_rows(cosines, np.arange(n_cam)))   # the first n_cam test images: ids 0 … n_cam − 1
    return path, {f"{b}-bit": round(float(c.mean()), 3) for b, c in cosines.items()}


def figure_loss_terms(inp: Inputs) -> Path:
    """``triqdef_loss_terms.png``: TriQDef's classification terms and penalties over training, BACT stages marked."""
    from triqdef.reporting.plots import loss_terms
    from triqdef.reporting.tables import save_figure
    from triqdef.stages.defense import checkpoint
    from triqdef.training.loop import read_checkpoint

    hist = pd.DataFrame(read_checkpoint(checkpoint("triqdef"))["history"])
    starts = [st["start_step"] for st in inp.metas[S.TRIQDEF]["settings"]["bact_schedule"][1:]]
    return save_figure(loss_terms(hist, inp.cfg.triqdef.pair_reduction, starts), "triqdef_loss_terms")


def convergence_curves(inp: Inputs) -> dict[str, pd.DataFrame]:
    """Each defense's convergence curve (``results/plots/defenses/<method>_convergence.csv``, written by the
    defense stage every ``defenses.monitor_every`` steps); empty when the monitor was off."""
    from triqdef.stages.defense import METHODS

    curves = {}
    for method in METHODS:
        path = paths.results_dir() / "plots" / "defenses" / f"{method}_convergence.csv"
        if not path.is_file():
            raise TriqdefError(f"convergence curve {path} not found: expected the output of 'triqdef train defense {method}'")
        frame = pd.read_csv(path)
        if len(frame):
            curves[method] = frame
    return curves


def figure_convergence(inp: Inputs) -> Path:
    """``defense_convergence.png``: seen-set ASR and clean accuracy of every defense against training steps, on the
    monitor subset (``defenses.monitor_images`` held-out images, never test images); a figure that says so when the monitor was off."""
    from triqdef.reporting.plots import convergence
    from triqdef.reporting.tables import save_figure

    d = inp.cfg.defenses
    return save_figure(convergence(convergence_curves(inp), d.monitor_bits, inp.cfg.patches.attacks), "defense_convergence")


def figure_cross_bit(inp: Inputs):
    """Stage ``cross_bit``'s matrices as one heatmap per defended model (issue 30, item 1), drawn here from its table
    ``cross_bit_matrix``: the ASR of patches made white-box at each source bit-width (rows) at every bit-width of the
    same model (columns), the diagonal framed. Returns the figure (shown in the notebook, not saved again)."""
    from triqdef.reporting import plots
    from triqdef.reporting.cross_bit_figure import transfer_heatmaps

    path = paths.results_dir() / "tables" / "cross_bit_matrix.csv"
    if not path.is_file():
        raise TriqdefError(f"cross-bit table {path} not found: expected the output of 'triqdef patches cross-bit'")
    plots.use_style()
    return transfer_heatmaps(pd.read_csv(path))


def write_measurement_store(inp: Inputs) -> Path:
    """Write the measurements of Tables 17 and 18 and Figure 3 to ``results/outcomes/training_measures.parquet``
    (:mod:`.training_measures`), from which REPORT decides claims 9, 11 and 19; one line names what is missing."""
    from triqdef.eval import measure_store
    from triqdef.stages import training_measures as TM

    if not inp.measures:
        raise TriqdefError("no training measurement to write: expected Tables 17 and 18 and Figure 3 to run first")
    return measure_store.write(pd.concat(inp.measures, ignore_index=True), TM.store_path(),
                               info=dict(inp.measures_info, data=inp.meta["data"]["source"], model=inp.model_name))


# --------------------------------------------------------------------------- stage metrics


def metrics(inp: Inputs, table4: pd.DataFrame, table5: pd.DataFrame, bench: dict, gradcam_cosine: dict,
            wall_time_s: float) -> tuple[dict, dict]:
    """The stage's headline, flat numbers (TriQDef's unseen LAVAN ASR per bit-width ``unseen_lavan_<b>bit`` in the
    deciding regime, whose Table 5 ``table5`` is; Table 17's time and memory ratios; the wall time), and the
    details (TriQDef's clean-accuracy deviation from standard QAT, the Grad-CAM similarity, Tables 4 and 5 as
    records, the benchmark, provenance)."""
    from triqdef.stages.regimes import deciding_regime

    t5 = table5.set_index([S.MODEL, S.GROUP])
    unseen = {S.view_of(c): t5.loc[(S.TRIQDEF, S.UNSEEN), c] for c in S.attack_columns(t5.columns, S.LAVAN)}
    headline = {**{f"unseen_lavan_{v.replace('-', '')}": asr for v, asr in unseen.items()},  # flat: one column each
                "time_ratio": bench["time_ratio"], "mem_ratio": bench["mem_ratio"],
                "stage_wall_time_s": round(wall_time_s, 1)}
    details = {"profile": inp.profile, "n_eval": inp.n_eval, "regime": deciding_regime(inp),
               "clean_deviation_triqdef_minus_qat": clean_deviation(table4), "gradcam_cosine_to_fp": gradcam_cosine,
               "table4": table4.to_dict(orient="records"),
               "table5": table5.to_dict(orient="records"), "bench": {k: v for k, v in bench.items() if k != "settings" and not k.endswith("_steps")},
               "provenance": inp.meta}
    return headline, details
