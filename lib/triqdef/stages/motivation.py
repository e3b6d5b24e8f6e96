"""Stage ``motivation`` (notebook ``01_motivation``): why defending quantized models against patches is needed.

Paper section 2, appendices A and C.1. From the checkpoints of stages
``train_fp`` and ``train_qat``, the patch sets of ``patches`` and the second
architecture of ``cross_arch``, this module builds and saves

* Table 4 (standard-QAT rows): clean accuracy per bit-width of the FP model,
  its PTQ version, standard multi-bit QAT and QAT with every layer at b, and
  the figures ``clean_accuracy_vs_bits`` and ``training_curves``;
* Table 1: FP-made patches transferred to standard QAT at each bit-width;
* Table 3: input-gradient similarity across bit-widths;
* Figure 2 and Table 12: feature-map alignment at the FDP taps;
* Table 9 (CIFAR analogue) and Table 11: PTQ and dynamic quantization;
* Table 8: transfer across architectures;
* the stage metrics ``results/metrics/motivation.json``.

The notebook calls one function per table or figure, in this order (the
order of the computations is part of the results: keep it).
"""

from __future__ import annotations

from collections.abc import Mapping

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef import paths, quant
from triqdef.reporting import schemas as S
from triqdef.stages.common import NotebookInputs

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant", "motivation", "cross_arch", "train_fp", "train_qat", "triqdef", "patches",
          "regimes")

#: Bit-width columns of Table 4.
ACCURACY_COLUMNS = [32, 8, 5, 4, 2]
#: Views of Table 3: the FP model and standard QAT at these bit-widths.
GRADIENT_BITS = (5, 4, 2)
#: Bit-width pairs of Table 12.
TABLE12_PAIRS = (S.pair_label(32, 5), S.pair_label(5, 4))
#: Stage ``patches``'s sets whose sizes Table 9 takes (8, 9 and 10 px in the paper's regime); its patches are
#: its own (:func:`table9_patches`).
TABLE9_SETS = ("unseen_size8", "size9", "unseen_size10")


@dataclass(kw_only=True)
class Inputs(NotebookInputs):
    """:class:`~triqdef.stages.common.NotebookInputs` and the FP, PTQ and standard-QAT models of Table 4."""

    fp: nn.Module
    fp_meta: dict
    ptq: nn.Module
    qat: nn.Module
    qat_meta: dict
    models: dict[str, tuple[nn.Module, list[int]]]  # Table 4 rows: label -> (model, its bit-widths)
    qat_label: str
    patch_meta: dict

    @property
    def n_test(self) -> int:
        return len(self.splits.test.labels)

    def describe(self) -> str:
        return (f"profile {self.profile}; data {self.splits.source['source']}; test images {self.n_test} "
                f"({len(self.test_y)} for the patch tables); bits {list(self.cfg.quant.bits)}")


def load(cfg) -> Inputs:
    """Data, the FP model and its PTQ version, the standard multi-bit QAT model(s), the patch sets."""
    from triqdef.attacks.patchsets import load_patchset
    from triqdef.eval.accuracy import first_test_images
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.stages.devices import to_device
    from triqdef.training.loop import model_from_checkpoint, resolve_device

    device = resolve_device(cfg.base.device)
    splits = common.load_data(cfg)
    q = cfg.quant
    fp, fp_meta = model_from_checkpoint(common.fp_checkpoint(cfg), kind="fp")
    ptq = quant.post_training_quantize(fp, list(q.bits), [x for x in common.calibration_batches(splits)],
                                       q.first_last_bits, q.activation_range)
    qat, qat_meta = model_from_checkpoint(common.qat_checkpoint(cfg), kind="qat")
    qat_label = f"Standard QAT (first/last {qat_meta['first_last_bits']}-bit)"
    models = {
        "FP (32-bit training)": (fp, [32]),
        f"PTQ of FP (first/last {q.first_last_bits}-bit)": (ptq, list(q.bits)),
        qat_label: (qat, qat_meta["bits"]),
    }
    all_layers_path = common.qat_checkpoint(cfg, all_layers=True)
    if all_layers_path.exists():
        qat_all, qat_all_meta = model_from_checkpoint(all_layers_path, kind="qat")
        models["Standard QAT (every layer at b)"] = (qat_all, qat_all_meta["bits"])
    to_device([model for model, _ in models.values()], device)  # PTQ was calibrated above, on the CPU
    patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    test_x, test_y = first_test_images(splits, cfg.motivation.test_images, "motivation.test_images")
    meta = provenance(cfg, {"data": common.data_record(splits), "device": str(device), "checkpoints": {
        "fp": fp_meta.get("commit"), "qat": qat_meta.get("commit")}, "qat_steps": qat_meta.get("steps"),
        "fp_steps": fp_meta.get("steps")})
    return Inputs(cfg=cfg, splits=splits, fp=fp, fp_meta=fp_meta, ptq=ptq, qat=qat, qat_meta=qat_meta, models=models,
                  qat_label=qat_label, patches=patches, patch_meta=patch_meta, test_x=test_x, test_y=test_y, meta=meta)


# --------------------------------------------------------------------------- Table 4 and the figures of training


def table4_clean_accuracy(inp: Inputs) -> pd.DataFrame:
    """Table 4 (standard-QAT rows): clean accuracy (%) per bit-width on every test image."""
    from triqdef.eval.accuracy import clean_accuracy_table
    from triqdef.reporting.tables import save_table

    table = clean_accuracy_table(inp.models, inp.splits.test.images, inp.splits.test.labels, ACCURACY_COLUMNS)
    caption = (f"Clean test accuracy (%) on {inp.n_test} CIFAR-10 test images "
               f"({inp.splits.source['source']}), {inp.model_name}, profile `{inp.profile}`. "
               "Paper Table 4 (ResNet-56, 200 epochs): standard QAT 89.4 / 85.1 / 80.5 / 78.2 at 32 / 5 / 4 / 2 bits.")
    save_table(table, "table4_clean_accuracy", inp.meta, caption=caption)
    return table


def figure_clean_accuracy(inp: Inputs, table4: pd.DataFrame) -> Path:
    """``clean_accuracy_vs_bits.png``: Table 4 as lines over the bit-widths."""
    from triqdef.reporting.plots import accuracy_vs_bits
    from triqdef.reporting.tables import save_figure

    title = f"{inp.model_name} on CIFAR-10 ({inp.profile} profile, {inp.n_test} test images)"
    return save_figure(accuracy_vs_bits(table4, ACCURACY_COLUMNS, title), "clean_accuracy_vs_bits")


def figure_training_curves(inp: Inputs) -> Path:
    """``training_curves.png``: per-step cross-entropy of the FP run and of each bit-width of the QAT run."""
    from triqdef.reporting.plots import training_curves
    from triqdef.reporting.tables import save_figure
    from triqdef.stages import common
    from triqdef.training.loop import read_checkpoint

    fp_hist = pd.DataFrame(read_checkpoint(common.fp_checkpoint(inp.cfg))["history"])
    qat_hist = pd.DataFrame(read_checkpoint(common.qat_checkpoint(inp.cfg))["history"])
    fig = training_curves(fp_hist, qat_hist, inp.qat_meta["bits"], inp.fp_meta["params"].get("label_smoothing", 0))
    return save_figure(fig, "training_curves")


# --------------------------------------------------------------------------- Table 1


#: "Keeps most of its success" (Tables 1 and 11): the transferred ASR is at least this share of the ASR it is
#: compared with, decided on the 95 % interval of ``ASR − share × reference`` (docs/design.md#intervals-and-verdicts).
KEEPS_SHARE = 0.7
#: The paper's levels: Table 8 "above 70 % at 2 bits", Table 9 "over 50 % at 2 bits".
TABLE8_LEVEL, TABLE9_LEVEL = 0.7, 0.5


#: The outcome stores of notebook 01 (issue 29, item 1): Tables 1, 8 and 9 in each regime, Table 11 (6×6 only).
STORES = ("table1", "table8", "table9", "table11")
#: The store's model names of the views of Tables 1, 9 and 11.
FP, QAT, PTQ, PTQ_CLIP, DYNAMIC = "FP", "Standard QAT", "PTQ", "PTQ (MSE clip)", "dynamic 8-bit"


def view_model(view: str) -> tuple[str, int]:
    """The (model, bit-width) of a view of Tables 1, 9 or 11, as the outcome store names it."""
    import re

    if view in (S.FP_WHITEBOX_VIEW, S.FP32_VIEW):
        return FP, quant.FP_BITS
    if view == S.DYNAMIC_8BIT_VIEW:
        return DYNAMIC, 8
    ptq = re.fullmatch(r"PTQ (\d+)( \(MSE clip\))?", view)
    if ptq:
        return (PTQ_CLIP if ptq.group(2) else PTQ), int(ptq.group(1))
    if view.isdigit():
        return QAT, int(view)
    from triqdef.errors import TriqdefError

    raise TriqdefError(f"view {view!r}: expected one of Table 1's, 9's or 11's views to store its outcomes")


def store_path(name: str, regime: str = "paper") -> Path:
    """``results/outcomes/<name>[_matched].parquet`` (``name``: one of :data:`STORES`)."""
    from triqdef.stages.regimes import regime_table

    return paths.results_dir() / "outcomes" / f"{regime_table(name, regime)}.parquet"


def write_store(inp: Inputs, records: pd.DataFrame, name: str, regime: str, single: bool = False) -> pd.DataFrame:
    """The outcome store of a notebook-01 table's records (each view as its model and bit-width), written to
    :func:`store_path` (``single``: a table made in one regime only, ``<name>.parquet`` whatever the regime, which
    its info records); returns its rows."""
    from triqdef.eval import outcome_store
    from triqdef.stages.regimes import regime_size

    pairs = [view_model(v) for v in records["view"]]
    rows = records.assign(model=[m for m, _ in pairs], view=[S.bit_view(b) for _, b in pairs], patch_set=records["set"])
    path = store_path(name) if single else store_path(name, regime)
    return outcome_store.write_records(rows, inp.cfg.base.seed, inp.test_y.cpu().numpy(), path,
                                       info={"regime": regime, "patch_size": regime_size(inp, regime),
                                             "set_sizes": set_sizes(records), "profile": inp.profile})


def set_sizes(records: pd.DataFrame) -> dict[str, int]:
    """Each patch set's size in ``records`` (for a caption, and for the store's info)."""
    return {str(k): int(v) for k, v in records.groupby("set")["size"].first().items()}


def keeps_claims(store: pd.DataFrame, model: str, bits: int, label: str, seed: int = 0) -> list[dict]:
    """For each attack: ``ASR(model at bits) − KEEPS_SHARE × ASR(FP)`` on the same patches, paired on the images
    eligible for both (:func:`triqdef.eval.defense_claims.common_image_difference`), and the verdict on "the patches keep
    at least that share of their success" (Tables 1 and 11). Computed from the outcome store; ``triqdef report``
    calls it again."""
    from triqdef.eval.defense_claims import common_image_difference, evidence

    out = []
    for attack in sorted(store["attack"].unique()):
        ci, d = common_image_difference(store, dict(model=model, bits=bits, attack=attack),
                                  dict(model=FP, bits=quant.FP_BITS, attack=attack), seed=seed, scale=KEEPS_SHARE)
        out.append(evidence(f"{attack.upper()} ASR {label} − {KEEPS_SHARE:g} × FP (points)", ci, "higher", 0.0,
                            "keeps", n_common=d["n_common"]))
    return out


def level_claim(store: pd.DataFrame, level: float, statement: str, seed: int = 0, **where) -> dict:
    """The rate of a store selection with its 95 % interval (studentised over patches), and the verdict on
    "above ``level``"."""
    from triqdef.eval import outcome_store
    from triqdef.eval.defense_claims import evidence
    from triqdef.eval.intervals import bootstrap_rate
    from triqdef.eval.transfer import N_BOOT

    return evidence(statement, bootstrap_rate(outcome_store.outcomes(store, **where), N_BOOT, seed, "t"), "higher",
                    level, "level")


def lowest_bits(store: pd.DataFrame, model: str) -> int:
    return int(store.loc[store["model"] == model, "bits"].min())


def table1_claims(store: pd.DataFrame, seed: int = 0) -> list[dict]:
    """Table 1's claim from its store: the FP-made patches keep 70 % of their white-box ASR on standard QAT at its
    lowest bit-width (:func:`keeps_claims`)."""
    low = lowest_bits(store, QAT)
    return keeps_claims(store, QAT, low, f"on standard QAT at {low} bits", seed)


def table9_claims(store: pd.DataFrame, set_sizes: dict, seed: int = 0) -> list[dict]:
    """Table 9's claim from its store: each size's LAVAN ASR on the PTQ model at its lowest bit-width above
    :data:`TABLE9_LEVEL` (``set_sizes``: each set's patch size, from the store's info)."""
    low = lowest_bits(store, PTQ)
    return [level_claim(store, TABLE9_LEVEL, f"LAVAN {set_sizes[name]}×{set_sizes[name]} ASR on PTQ {low}-bit (%)", seed,
                        model=PTQ, bits=low, set=name, attack=S.LAVAN)
            for name in sorted(set_sizes, key=lambda n: (set_sizes[n], n))]


def table8_store_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Table 8's records (:func:`triqdef.stages.cross_arch.table8_records`) as outcome-store rows: each target
    model's FP model as model ``<target> FP`` at 32 bits, its QAT model as ``<target> QAT`` at each bit-width; the
    set names the source (its patches)."""
    fp = records["view"] == S.FP_VIEW
    model = records["target_model"] + np.where(fp, " FP", " QAT")
    return records.assign(model=model, view=np.where(fp, S.bit_view(quant.FP_BITS), records["view"]),
                          patch_set=records["set"])


def table8_claims(store: pd.DataFrame, directions: list[dict], seed: int = 0) -> list[dict]:
    """Table 8's claims from its store: in each direction whose target has a QAT model (``directions``: source,
    target and patch set, from the store's info), the LAVAN ASR at that model's lowest bit-width above
    :data:`TABLE8_LEVEL` (:func:`level_claim`). ``triqdef report`` calls it again on the store."""
    from triqdef.eval import outcome_store

    out = []
    for d in directions:
        model = f"{d['target']} QAT"
        where = {"model": model, "set": d["set"], "attack": S.LAVAN}
        if outcome_store.select(store, **where).empty:
            continue
        low = lowest_bits(store, model)
        out.append(level_claim(store, TABLE8_LEVEL, f"LAVAN {d['source']}→{d['target']} ASR at {low} bits (%)", seed,
                               bits=low, **where))
    return out


def table11_claims(store: pd.DataFrame, seed: int = 0) -> list[dict]:
    """Table 11's claim from its store: the patches keep 70 % of their FP ASR on the dynamic 8-bit model."""
    return keeps_claims(store, DYNAMIC, 8, "on the dynamic 8-bit model", seed)


def table1_views(inp: Inputs) -> dict:
    """The FP model itself (white-box) and standard QAT at each of its bit-widths."""
    views = {S.FP_WHITEBOX_VIEW: (inp.fp, None)}
    views.update({S.qat_view(b): (inp.qat, b) for b in inp.qat_meta["bits"]})
    return views


def table1_transfer(inp: Inputs, regime: str = "paper") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1: targeted ASR of the ``seen`` patches (made on the FP model) on the views of :func:`table1_views`;
    also the fooling rate and the ASR on the images every view gets right, each rate with its 95 % interval.
    ``regime``: the paper's patch size or the matched size (docs/design.md#attack-regime; tables ``*_matched``).
    Returns the ASR table and the records."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval.transfer import pivot_rates, transfer_records, view_predictions
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    names = ["table1_transfer_asr", "table1_transfer_fooling", "table1_transfer_asr_common"]
    if why := not_evaluated(inp, regime):
        return save_absent_regime(inp, names, regime, stores=[store_path("table1", regime)], why=why), pd.DataFrame()
    views = table1_views(inp)
    clean = view_predictions(views, inp.test_x)
    seen = select(inp.patches, regime_set("seen", regime))
    records = transfer_records(seen, views, inp.test_x, inp.test_y, clean)
    order = list(views)
    claims = table1_claims(write_store(inp, records, "table1", regime), inp.cfg.base.seed)
    meta = dict(inp.meta, regime=regime, patches={"set": regime_set("seen", regime), "n": len(seen),
                                                  "size": regime_size(inp, regime), "steps": inp.patch_meta["params"]["steps"]})
    cap = (f"Targeted ASR (%) of {len(seen)} seen {regime_label(inp, regime)} patches made on the FP {inp.model_name}, "
           f"transferred to standard multi-bit QAT, {len(inp.test_y)} test images ({inp.splits.source['source']}), profile "
           f"`{inp.profile}`; 95% bootstrap intervals over images and patches. "
           "Paper Table 1 (ResNet-20, 6×6): LAVAN 87.2 / 83.7 / 77.3 / 74.2, GAP 84.7 / 59.6 / 58.5 / 50.3 at 32 / 8 / 4 / 2 bits.")
    cap = caption_with_claims(cap, claims)
    t1 = pivot_rates(records, "asr", column_order=order)
    save_table(t1, regime_table(names[0], regime), dict(meta, claims=claims), caption=cap)
    save_table(pivot_rates(records, "fooling", column_order=order), regime_table(names[1], regime), meta,
               caption="Untargeted fooling rate (%) of the same patches and views as Table 1.")
    common = pivot_rates(records, "asr_common", column_order=order)  # empty columns when no image is correct in every view
    save_table(common, regime_table(names[2], regime), meta,
               caption=(f"Targeted ASR (%) on the images that every view of Table 1 classifies correctly "
                        f"({int(records['n_common'].max())} images at most; empty when there is none)."))
    return t1, records


ESTIMATOR_LABELS = {"max": "min/max", "mse": "MSE clip"}


def table1_estimators(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 1 with both activation range estimators (issue 12, item 6): the seen patches on standard QAT at each
    quantized bit-width, its observers and BN recalibrated on the held-out images with min/max and with the MSE
    clip (same weights; :func:`triqdef.quant.with_range_estimator`), beside the FP white-box column, each rate with
    its 95 % interval. The pipeline's own QAT model trains with ``quant.activation_range``."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval.transfer import pivot_rates, transfer_records
    from triqdef.stages.devices import calibration_on
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table1_estimators"], regime)
    calibration = calibration_on(inp.qat, inp.splits.holdout.images)
    views = {S.FP_WHITEBOX_VIEW: (inp.fp, None)}
    for estimator, label in ESTIMATOR_LABELS.items():
        model = quant.with_range_estimator(inp.qat, estimator, calibration)
        views.update({f"{S.qat_view(b)} ({label})": (model, b) for b in inp.qat_meta["bits"] if b != quant.FP_BITS})
    seen = select(inp.patches, regime_set("seen", regime))
    records = transfer_records(seen, views, inp.test_x, inp.test_y)
    table = pivot_rates(records, "asr", column_order=list(views))
    trained = inp.qat_meta.get("range_estimator")
    save_table(table, regime_table("table1_estimators", regime),
               dict(inp.meta, regime=regime, trained_with=trained, n_calibration=len(inp.splits.holdout.labels)),
               caption=(f"Table 1 with both activation range estimators: targeted ASR (%) of {len(seen)} seen "
                        f"{regime_label(inp, regime)} patches on the standard-QAT {inp.model_name} (trained with "
                        f"{trained}), its observers and BN recalibrated on {len(inp.splits.holdout.labels)} held-out "
                        "images with min/max and with the MSE clip (same weights); 95% bootstrap intervals. The clip "
                        "blunts patches, whose activations are the largest in the image."))
    return table


def per_image_lavan(inp: Inputs, size: int) -> tuple[list, torch.Tensor, torch.Tensor]:
    """LAVAN as its original allows: one patch optimised for each of the first ``motivation.per_image_images``
    patch-table images, at its own fixed location inside the region, towards its own random target (not its
    label), on the FP model, with the ``patches`` optimiser and budget (one image per step), ``size`` pixels.
    Returns the patches, the images (floats) and their labels."""
    from triqdef.attacks.patches import random_locations
    from triqdef.attacks.patchsets import optimiser
    from triqdef.attacks.universal import PatchRequest, optimise_patches

    pcfg, seed = inp.cfg.patches, inp.cfg.base.seed
    n = min(inp.cfg.motivation.per_image_images, len(inp.test_y))
    x, y = inp.test_x[:n].float() / 255, inp.test_y[:n]
    g = torch.Generator().manual_seed(seed * 1_000 + 61)
    targets = (y + torch.randint(1, 10, (n,), generator=g)) % 10
    locations = random_locations(n, size, g, x.shape[-1], pcfg.border)
    requests = [PatchRequest(int(t), seed * 100_003 + 60_000 + i, pcfg.border, tuple(loc.tolist()), True, (i,))
                for i, (t, loc) in enumerate(zip(targets, locations))]
    opt = dataclasses.replace(optimiser(pcfg, "lavan"), images_per_patch=1)
    return optimise_patches(inp.fp, x, y, size, requests, opt, source_model=inp.model_name), x, y


def table1_protocols(inp: Inputs, records: pd.DataFrame, regime: str = "paper") -> pd.DataFrame:
    """Table 1's protocol variants (LAVAN, 6×6), to locate the paper's 87 % white-box ASR (issue 12, item 4): the
    universal patches' mean over targets (Table 1's row), their best target (chosen on the FP white-box view of
    the same images: optimistic), their untargeted fooling rate, and per-image patches (:func:`per_image_lavan`),
    each on every view of Table 1 with its 95 % bootstrap interval."""
    from triqdef.attacks.patches import paste
    from triqdef.eval.accuracy import predict
    from triqdef.eval.intervals import Outcomes, bootstrap_rate
    from triqdef.eval.transfer import records_outcomes
    from triqdef.reporting.tables import save_table
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table1_protocols"], regime)
    size = regime_size(inp, regime)
    views = table1_views(inp)
    lavan = records[records[S.ATTACK] == S.LAVAN]
    fp_rates = lavan[lavan["view"] == S.FP_WHITEBOX_VIEW].set_index("patch")["asr"]
    best = int(fp_rates.idxmax())
    per_image, x, y = per_image_lavan(inp, size)
    contents = torch.stack([p.content for p in per_image])
    locations = torch.tensor([p.location for p in per_image])
    targets = torch.tensor([p.target for p in per_image])
    rows = {"universal, mean over targets": {}, f"universal, best target ({int(lavan.loc[lavan['patch'] == best, 'target'].iloc[0])})": {},
            "universal, untargeted fooling rate": {}, "per-image patch (own target, fixed location)": {}}
    counts = {}
    for view, (model, bits) in views.items():
        mine = lavan[lavan["view"] == view]
        outcomes = [records_outcomes(mine, "asr"), records_outcomes(mine[mine["patch"] == best], "asr"),
                    records_outcomes(mine, "fooling")]
        clean = predict(model, x, bits)
        adv = predict(model, paste(x, contents, locations), bits)
        outcomes.append(Outcomes(((adv == targets).numpy())[None], ((clean == y) & (y != targets)).numpy()[None]))
        for label, o in zip(rows, outcomes):
            ci = bootstrap_rate(o, seed=inp.cfg.base.seed)
            rows[label].update({view: 100 * ci.value, f"{view} low": 100 * ci.low, f"{view} high": 100 * ci.high})
            counts.setdefault(label, {}).update({"n images": ci.n_images, "patches": ci.n_patches})
    counts[list(rows)[-1]]["patches"] = len(per_image)  # one patch per image (its interval resamples the images)
    table = pd.DataFrame([{"protocol": label, **cells, **counts[label]} for label, cells in rows.items()])
    steps = inp.cfg.patches.steps
    cap = (f"Table 1's protocols, LAVAN {regime_label(inp, regime)}, FP {inp.model_name} and standard QAT: "
           f"targeted ASR (%) of the universal seen patches (mean over targets; best target, chosen on the same images), "
           f"their untargeted fooling rate, and per-image patches ({len(y)} images, {steps} steps each, one patch per image "
           "at its own fixed location and random target). 95% bootstrap intervals. Paper Table 1: LAVAN 87.2 / 83.7 / 77.3 / "
           "74.2 at 32 / 8 / 4 / 2 bits.")
    save_table(table, regime_table("table1_protocols", regime), dict(inp.meta, per_image_images=len(y), regime=regime),
               caption=cap)
    return table


# --------------------------------------------------------------------------- Table 3, Figure 2, Table 12


def alignment_images(inp: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``motivation.n_align`` patch-table images (floats in [0, 1]) and their labels, on the QAT model's
    device (the alignment code feeds them to the models directly)."""
    from triqdef.stages.devices import device_of

    n_align = min(inp.cfg.motivation.n_align, len(inp.test_y))
    device = device_of(inp.qat)
    return (inp.test_x[:n_align].float() / 255).to(device), inp.test_y[:n_align].to(device)


def alignment_store_path(name: str):
    """``results/outcomes/<name>.parquet``: a measurement store of the alignment study (``table3``: input gradients,
    ``figure2``: feature maps), every pair of bit-widths per image, with the chance baselines."""
    return paths.results_dir() / "outcomes" / f"{name}.parquet"


def table3_gradient_similarity(inp: Inputs) -> pd.DataFrame:
    """Table 3: input-gradient similarity between the FP model and standard QAT at 5, 4 and 2 bits, from its
    per-image measurements (written to the measurement store ``table3``, which REPORT's claim reads)."""
    from triqdef.eval import measure_store
    from triqdef.eval.alignment import gradient_similarity_items, gradient_table
    from triqdef.reporting.tables import save_table

    x, y = alignment_images(inp)
    views = {"fp": (inp.fp, None)}
    views.update({str(b): (inp.qat, b) for b in GRADIENT_BITS})
    items = gradient_similarity_items(views, x, y, inp.cfg.base.seed)
    measure_store.write(items, alignment_store_path("table3"), info={"what": "Table 3: input-gradient similarity "
                                                                              "per test image, with chance baselines",
                                                                      "seed": inp.cfg.base.seed})
    t3 = gradient_table(items)
    save_table(t3, "table3_gradient_similarity", dict(inp.meta, n_images=len(y)), floatfmt=".3f",
               caption=(f"Input-gradient similarity between bit-width pairs on {len(y)} clean test images, with chance "
                        "baselines (deranged pairs). Paper Table 3: cosine 0.05-0.25, HOG cosine about 0.80, Edge IoU 0.5-0.6 "
                        "(no baselines given)."))
    return t3


def feature_alignment(inp: Inputs) -> pd.DataFrame:
    """Figure 2's records: feature-map similarity of standard QAT between its bit-widths at the FDP taps,
    on clean inputs and on inputs carrying the first seen LAVAN patch of the deciding regime, from their per-image
    measurements (written to the measurement store ``figure2``, which REPORT's claim reads)."""
    from triqdef.attacks.patches import apply_patch
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import alignment, measure_store
    from triqdef.stages.regimes import deciding_regime

    x, _ = alignment_images(inp)
    taps = list(inp.cfg.triqdef.taps_of(inp.model_name))  # the FDP taps: one list, in params.yaml
    lavan_seen = select(inp.patches, regime_set("seen", deciding_regime(inp)), "lavan")[0]
    inputs = {"clean": x, "patched": apply_patch(x, lavan_seen)}
    items = alignment.feature_alignment_items(inp.qat, inputs, list(inp.qat_meta["bits"]), taps, inp.cfg.base.seed)
    measure_store.write(items, alignment_store_path("figure2"), info={"what": "Figure 2 / Table 12: feature-map "
                                                                              "similarity per test image, with chance baselines",
                                                                       "seed": inp.cfg.base.seed})
    return alignment.feature_records(items)


#: Claim 2's thresholds: "low" raw-gradient cosine, "high" HOG cosine (the paper: 0.05–0.25 and 0.80–0.82).
LOW_COSINE, HIGH_HOG = 0.3, 0.75
#: Claim 3's threshold: a feature-map Edge IoU above this many times its chance baseline is "aligned".
IOU_OVER_CHANCE = 2.0
N_BOOT = 2000


def _interval_of(values, seed: int):
    from triqdef.eval import measure_store as M

    return lambda level: M.mean_interval(values, N_BOOT, seed, level)[1:]


def table3_claim(items: pd.DataFrame, seed: int = 0) -> tuple[str, str]:
    """Claim 2 (§3.3, Table 3: input gradients across bit-widths have a low cosine but a high HOG cosine) from the
    measurement store ``table3`` alone: every pair's mean raw cosine claimed below :data:`LOW_COSINE` and mean HOG
    cosine above :data:`HIGH_HOG`, each a 95 % bootstrap interval over images, a side failing on a Bonferroni
    interval over the pairs (:func:`triqdef.eval.measure_store.every_item_claim`). *holds* when both sides hold,
    *partly* when one does, *does not hold* when both fail. Returns (our figure, verdict)."""
    from triqdef.eval import measure_store as M
    from triqdef.eval.alignment import GRADIENTS, gradient_table
    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE

    t = gradient_table(items)
    pairs = list(dict.fromkeys(t[S.PAIR]))
    sides, parts = {}, []
    for metric, claim, margin in ((S.RAW_COSINE, "lower", LOW_COSINE), (S.HOG_COSINE, "higher", HIGH_HOG)):
        cis = {p: _interval_of(M.values(items, metric, GRADIENTS, p), seed) for p in pairs}
        sides[metric] = M.every_item_claim(cis, claim, margin)
        parts.append(f"{metric} " + " / ".join(f"{p} {t.loc[(t[S.PAIR] == p) & (t[S.METRIC] == metric), S.VALUE].item():.2f} "
                                               "[{:.2f}, {:.2f}]".format(*cis[p](0.95)) for p in pairs)
                     + f" (claimed {claim} than {margin:g} at every pair: {sides[metric]})")
    cos, hog = t[t[S.METRIC] == S.RAW_COSINE][S.VALUE], t[t[S.METRIC] == S.HOG_COSINE]
    n = int(items.loc[items["model"] == GRADIENTS, "item"].nunique())
    ours = (f"raw cosine {cos.min():.2f}–{cos.max():.2f}; HOG cosine {hog[S.VALUE].min():.2f}–{hog[S.VALUE].max():.2f} "
            f"against chance {hog[S.CHANCE].mean():.2f} (at most {hog[S.ABOVE_CHANCE].max():.2f} above it). 95% CI: "
            f"{n} images; " + "; ".join(parts))
    held = [v == HOLDS for v in sides.values()]
    verdict = (HOLDS if all(held) else "partly" if any(held)
               else FAILS if all(v == FAILS for v in sides.values()) else INCONCLUSIVE)
    return ours, verdict


def figure2_claim(items: pd.DataFrame, seed: int = 0) -> tuple[str, str]:
    """Claim 3 (§3.2, Figure 2: feature maps of different bit-widths stay perceptually aligned) from the measurement
    store ``figure2`` alone: at every tap and Table 12 pair (clean inputs), the mean Edge IoU minus
    :data:`IOU_OVER_CHANCE` × its chance baseline, paired over images, claimed above 0 (95 % bootstrap intervals; a
    failure on a Bonferroni interval over the cells). *holds* when every cell holds, *partly* when one fails (the
    maps align above chance, but not by that factor everywhere). Returns (our figure, verdict)."""
    from triqdef.eval import measure_store as M
    from triqdef.eval.alignment import FEATURES, chance_measure, feature_records
    from triqdef.eval.intervals import FAILS, HOLDS

    records = feature_records(items)
    t = records[(records[S.INPUT] == "clean") & records[S.PAIR].isin(TABLE12_PAIRS)]
    iou, hog = t[t[S.METRIC] == S.EDGE_IOU], t[t[S.METRIC] == S.HOG_COSINE]
    if iou.empty:   # REPORT reads it as an incomplete result
        raise KeyError(f"no clean Edge IoU at the pairs {', '.join(TABLE12_PAIRS)} in the figure2 store")
    cells, parts = {}, []
    for _, r in iou.iterrows():
        view = f"clean|{r[S.TAP]}|{r[S.PAIR]}"
        v = M.values(items, S.EDGE_IOU, FEATURES, view)
        c = M.values(items, chance_measure(S.EDGE_IOU), FEATURES, view)
        cells[view] = (lambda v, c: lambda level: M.paired_mean_difference(v, IOU_OVER_CHANCE * c, N_BOOT, seed, level)[1:3])(v, c)
        d = (v - IOU_OVER_CHANCE * c).mean()
        parts.append(f"{r[S.TAP]} {r[S.PAIR]} {d:+.2f} [{cells[view](0.95)[0]:+.2f}, {cells[view](0.95)[1]:+.2f}]")
    verdict = M.every_item_claim(cells, "higher", 0.0)
    n = int(items.loc[items["model"] == FEATURES, "item"].nunique())
    ours = (f"Edge IoU between 32↔5 and 5↔4 feature maps at the taps {iou[S.VALUE].min():.2f}–{iou[S.VALUE].max():.2f} vs "
            f"chance {iou[S.CHANCE].mean():.2f}; HOG {hog[S.VALUE].min():.2f}–{hog[S.VALUE].max():.2f} vs "
            f"{hog[S.CHANCE].mean():.2f}. 95% CI: {n} images; Edge IoU − {IOU_OVER_CHANCE:g} × chance (claimed above 0 "
            f"at every tap and pair: {verdict}): " + "; ".join(parts))
    return ours, {HOLDS: HOLDS, FAILS: "partly"}.get(verdict, verdict)


def figure2_feature_alignment(inp: Inputs, records: pd.DataFrame) -> Path:
    """``figure2_feature_alignment.png``: Edge IoU and HOG cosine heatmaps over bit-width pairs, per tap and input."""
    from triqdef.eval import alignment
    from triqdef.reporting.plots import alignment_heatmaps
    from triqdef.reporting.tables import save_figure

    taps = [alignment.TAP_LABELS.get(t, t) for t in inp.cfg.triqdef.taps_of(inp.model_name)]
    inputs = list(dict.fromkeys(records[S.INPUT]))
    fig = alignment_heatmaps(records, inputs, taps, list(inp.qat_meta["bits"]))
    return save_figure(fig, "figure2_feature_alignment")


def table12_hard_vs_soft(inp: Inputs, records: pd.DataFrame) -> pd.DataFrame:
    """Table 12: hard metrics (Edge IoU, HOG) beside their soft counterparts, clean inputs, pairs 32-5 and 5-4."""
    from triqdef.eval.alignment import hard_vs_soft_table
    from triqdef.reporting.tables import save_table

    t12 = hard_vs_soft_table(records, TABLE12_PAIRS)
    n_align = len(alignment_images(inp)[1])
    save_table(t12, "table12_hard_vs_soft", dict(inp.meta, n_images=n_align), floatfmt=".3f",
               caption=("Hard vs soft metrics between feature maps of the standard-QAT model at the tap layers "
                        "(clean inputs): Edge IoU vs SoftDice of soft edges, HOG vs SoftHOG cosine; chance baselines in brackets."))
    return t12


# --------------------------------------------------------------------------- Tables 9 and 11

#: Patch seeds of Table 9's own sets (:func:`table9_plan`) are ``seed·100003 + TABLE9_SEED_OFFSET + …``: never those of stage ``patches`` (below 40,000)
#: nor of the cross-architecture (50,000), random-location (60,000), strength / DPR (70,000), PatchAttack
#: (80,000) or white-box (90,000) patches.
TABLE9_SEED_OFFSET = 40_000
#: The set-name prefix: ``table9_size8`` (``table9_size8_matched`` at the matched size).
TABLE9_PREFIX = "table9_size"


def table9_sizes(regime_sizes: dict, regime: str, names: tuple[str, ...]) -> dict[int, int]:
    """The sizes of Table 9's sets ``names`` in ``regime``, by their paper-regime size: ``{8: 14, 9: 15, 10: 16}`` at
    the matched size. ``regime_sizes``: :func:`triqdef.attacks.patchsets.regime_sizes` (as stage ``patches`` recorded
    it in its metadata); ``names``: paper-regime set names such as ``unseen_size8`` or ``size9``."""
    from triqdef.errors import TriqdefError

    if regime not in regime_sizes:
        raise TriqdefError(f"regime '{regime}' is not in the patch stage's metadata (regimes {sorted(regime_sizes)}): "
                           "expected a regime that 'triqdef patches make' made")
    known = {**regime_sizes[regime]["unseen"], **regime_sizes[regime]["extra"]}
    missing = [n for n in names if n not in known]
    if missing:
        raise TriqdefError(f"Table 9's sets {missing} are not in the patch stage's regime '{regime}' (sets {sorted(known)}): "
                           "expected patches.unseen_sizes and patches.extra_sizes to hold Table 9's sizes")
    return {int(n.rsplit("size", 1)[1]): int(known[n]) for n in names}


def table9_plan(cfg, sizes: dict[int, int], seed: int, regime: str, num_classes: int = 10) -> list:
    """``cfg.seen_per_attack`` LAVAN patches per size of ``sizes`` (``{paper size: size in this regime}``), FP-made,
    inside the training region, set ``table9_size<paper size>`` of ``regime``; the same balanced targets at every size
    (deterministic in ``seed`` and the regime). See :func:`table9_patches`."""
    from triqdef.attacks.patchsets import PatchSpec, balanced_targets, regime_set

    draw = 1 if regime == "paper" else 2
    targets = balanced_targets(cfg.seen_per_attack, seed * 1_000 + 40 + draw, num_classes)
    specs: list[PatchSpec] = []
    for name_size, size in sorted(sizes.items()):
        for target in targets:
            specs.append(PatchSpec(regime_set(f"{TABLE9_PREFIX}{name_size}", regime), "lavan", size, "fp", None, target,
                                   seed * 100_003 + TABLE9_SEED_OFFSET + 1_000 * draw + len(specs), "inside", regime))
    return specs


def table9_patch_file(regime: str):
    """Where :func:`table9_patches` writes the patches of ``regime``: ``results/table9/patches[_matched].pt``."""
    from triqdef.attacks.patchsets import regime_patch_file

    return regime_patch_file(paths.results_dir() / "table9", regime)


def table9_patches(inp: Inputs, regime: str, progress: bool = True) -> tuple[list, float]:
    """Table 9's own patch sets in ``regime`` (issue 29, item 4; docs/design.md#table-9-sets): ``patches.seen_per_attack``
    FP-made LAVAN patches at each of its sizes (:func:`table9_plan`), from the attacker images of stage ``patches``;
    written to :func:`table9_patch_file` with their provenance. Returns them and the seconds they took."""
    from triqdef.attacks.patchsets import make_and_save
    from triqdef.config import as_dict
    from triqdef.meta import provenance
    from triqdef.stages import common

    cfg = inp.cfg
    sizes = table9_sizes(inp.patch_meta["regimes"], regime, TABLE9_SETS)
    specs = table9_plan(cfg.patches, sizes, cfg.base.seed, regime)
    meta = provenance(cfg, {"params": as_dict(cfg.patches), "regime": regime, "sizes": sizes,
                            "per_size": cfg.patches.seen_per_attack, "data": common.data_record(inp.splits),
                            "fp_checkpoint_commit": inp.fp_meta.get("commit")})
    return make_and_save(specs, {"fp": inp.fp}, inp.splits, cfg.patches, cfg.base.seed, cfg.model.name,
                         table9_patch_file(regime), meta, progress)


def table9_ptq_transfer(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 9 (CIFAR analogue): FP-made LAVAN patches of 8, 9 and 10 pixels (in the matched regime: scaled by the
    same factor), ``patches.seen_per_attack`` per size (:func:`table9_patches`), on the FP model and its PTQ
    versions."""
    from triqdef.eval.transfer import pivot_rates, transfer_records
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.regimes import not_evaluated, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table9_ptq_transfer_cifar"], regime, stores=[store_path("table9", regime)])
    from triqdef.stages.devices import calibration_on

    q = inp.cfg.quant
    views = {S.FP32_VIEW: (inp.fp, None)}
    views.update({S.ptq_view(b): (inp.ptq, b) for b in q.bits if b != 32})
    clip_bits = [b for b in q.bits if b != quant.FP_BITS and quant.estimator_for(q.activation_range, b) != "mse"]
    if clip_bits:  # issue 12 item 6: the same PTQ model with the MSE clip (recalibrated), so the estimator's effect shows
        clipped = quant.with_range_estimator(inp.ptq, "mse", calibration_on(inp.ptq, inp.splits.holdout.images))
        views.update({f"{S.ptq_view(b)} ({ESTIMATOR_LABELS['mse']})": (clipped, b) for b in clip_bits})
    patches, patch_seconds = table9_patches(inp, regime)
    records = transfer_records(patches, views, inp.test_x, inp.test_y)
    t9 = pivot_rates(records, "asr", index=(S.SIZE,), column_order=list(views))
    claims = table9_claims(write_store(inp, records, "table9", regime), set_sizes(records), inp.cfg.base.seed)
    save_table(t9, regime_table("table9_ptq_transfer_cifar", regime),
               dict(inp.meta, regime=regime, analogue_of="paper Table 9 (ImageNet ResNets)", claims=claims,
                    patches={"file": str(table9_patch_file(regime).relative_to(paths.output_root())), "per_size":
                             inp.cfg.patches.seen_per_attack, "seconds": patch_seconds}),
               caption=caption_with_claims("CIFAR analogue of paper Table 9 (which is ImageNet): targeted ASR (%) of FP-made "
                                           f"LAVAN patches by size, {inp.cfg.patches.seen_per_attack} per size with the same "
                                           "targets at each size (results/table9), "
                                           f"on the PTQ ResNet-20 ({regime} regime; sizes scaled by the "
                                           "same factor, kept distinct below the largest patch that fits: "
                                           f"{', '.join(f'{s} px' for s in sorted(set_sizes(records).values()))}); "
                                           "95% bootstrap "
                                           "intervals. The PTQ columns use the trained estimators ("
                                           + ", ".join(f"{b} bits: {ESTIMATOR_LABELS[quant.estimator_for(q.activation_range, b)]}"
                                                       for b in q.bits if b != quant.FP_BITS)
                                           + "); the '(MSE clip)' columns recalibrate the same PTQ model with the "
                                           "MSE clip.", claims))
    return t9


def table11_dynamic_quantization(inp: Inputs) -> pd.DataFrame:
    """Table 11: the seen patches of the deciding regime on the FP model and on its dynamically quantized 8-bit
    version (one table and one store, ``table11``, whatever the regime: its info records which)."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval.transfer import pivot_rates, transfer_records
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.devices import calibration_on
    from triqdef.stages.regimes import deciding_regime, regime_label

    q = inp.cfg.quant
    dyn = quant.dynamic_quantization(quant.post_training_quantize(inp.fp, [32, 8], calibration_on(inp.fp, inp.splits.holdout.images),
                                                                  q.first_last_bits, q.activation_range))
    views = {S.FP32_VIEW: (inp.fp, None), S.DYNAMIC_8BIT_VIEW: (dyn, 8)}
    regime = deciding_regime(inp)
    records = transfer_records(select(inp.patches, regime_set("seen", regime)), views, inp.test_x, inp.test_y)
    t11 = pivot_rates(records, "asr", column_order=list(views))
    claims = table11_claims(write_store(inp, records, "table11", regime, single=True), inp.cfg.base.seed)
    save_table(t11, "table11_dynamic_quantization", dict(inp.meta, claims=claims, regime=regime),
               caption=caption_with_claims(f"Targeted ASR (%) of the seen {regime_label(inp, regime)} patches on the "
                                           "FP model and its dynamically quantized 8-bit version.", claims))
    return t11


# --------------------------------------------------------------------------- Table 8


def table8_cross_architecture(inp: Inputs, regime: str = "paper") -> pd.DataFrame:
    """Table 8: the seen patches of the main model on the second architecture (FP and QAT), that architecture's
    patches on the main model, and on its own FP model (white-box reference), in ``regime``."""
    from triqdef.attacks.patchsets import regime_set, select
    from triqdef.eval import outcome_store
    from triqdef.eval.accuracy import accuracy
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages import cross_arch
    from triqdef.stages.devices import device_of, to_device
    from triqdef.stages.regimes import not_evaluated, regime_label, regime_size, regime_table, save_absent_regime

    if not_evaluated(inp, regime):
        return save_absent_regime(inp, ["table8_cross_architecture"], regime, stores=[store_path("table8", regime)])
    second = cross_arch.load_models(inp.cfg)
    to_device([second["fp"], second["qat"]], device_of(inp.qat))
    second["patches"] = select(second["patches"], regime_set("cross_arch", regime))
    bits = second["qat_meta"]["bits"]
    name = inp.model_name
    directions = [
        {"source": name, "patches": select(inp.patches, regime_set("seen", regime)), "target": second["name"], "fp": second["fp"],
         "qat": second["qat"], "bits": bits},
        {"source": second["name"], "patches": second["patches"], "target": name, "fp": inp.fp, "qat": inp.qat,
         "bits": [b for b in bits if b in inp.qat_meta["bits"]]},
        {"source": second["name"], "patches": second["patches"], "target": second["name"] + S.WHITEBOX_TARGET_SUFFIX,
         "fp": second["fp"], "qat": None, "bits": []},
    ]
    records, t8 = cross_arch.table8_records(directions, inp.test_x, inp.test_y)
    stored = [{"source": d["source"], "target": d["target"], "set": set_name} for d, set_name in
              zip(directions, [regime_set("seen", regime)] + 2 * [regime_set("cross_arch", regime)])]
    store = outcome_store.write_records(table8_store_rows(records), inp.cfg.base.seed, inp.test_y.cpu().numpy(),
                                        store_path("table8", regime),
                                        info={"regime": regime, "patch_size": regime_size(inp, regime),
                                              "directions": stored, "profile": inp.profile})
    claims = table8_claims(store, stored, inp.cfg.base.seed)
    images, labels = inp.splits.test.images, inp.splits.test.labels
    acc = {S.FP_VIEW: 100 * accuracy(second["fp"], images, labels)}  # every test image, as Table 4
    acc.update({S.bit_view(b): 100 * accuracy(second["qat"], images, labels, bits=b) for b in bits})
    min_acc = 100 * inp.cfg.cross_arch.min_accuracy
    flag = "" if acc[S.FP_VIEW] >= min_acc else f" (FP BELOW cross_arch.min_accuracy = {min_acc:.0f}%)"
    cap = (f"Targeted ASR (%) across architectures: {name} ↔ {second['name']}, {regime_label(inp, regime)} patches, "
           f"95% bootstrap intervals, {len(inp.test_y)} test images (outcomes: results/outcomes/"
           f"{store_path('table8', regime).name}), profile `{inp.profile}`. {second['name']} clean accuracy ({inp.n_test} test images): "
           + ", ".join(f"{k} {v:.1f}%" for k, v in acc.items()) + flag
           + f" ({second['fp_meta']['steps']} FP steps, {second['qat_meta']['steps']} QAT steps). "
           "Paper Table 8 (200-epoch models): ResNet-20 → ResNet-56 84.2 / 79.6 / 77.7 / 75.2, "
           "ResNet-56 → ResNet-20 84.1 / 77.7 / 75.3 / 71.8 at 32 / 8 / 4 / 2 bits.")
    cap = caption_with_claims(cap, claims)
    save_table(t8, regime_table("table8_cross_architecture", regime),
               dict(inp.meta, regime=regime, second_model=second["name"], second_model_accuracy=acc, claims=claims,
                    second_model_steps={"fp": second["fp_meta"]["steps"], "qat": second["qat_meta"]["steps"]}),
               caption=cap)
    return t8


# --------------------------------------------------------------------------- stage metrics


def accuracy_by_model(table4: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Table 4 as {model: {"<b>bit": accuracy}}, blank cells left out."""
    return {r[S.MODEL]: {c: r[c] for c in table4.columns if S.is_accuracy_column(c) and pd.notna(r[c])}
            for _, r in table4.iterrows()}


def rates_by_row(table: pd.DataFrame, index: str, columns) -> dict[str, dict[str, float]]:
    """{row label: {column: rate}} of an ASR table."""
    return {r[index]: {c: r[c] for c in columns} for _, r in table.iterrows()}


def metrics(inp: Inputs, table4: pd.DataFrame, table1: Mapping[str, pd.DataFrame], table1_records: pd.DataFrame,
            table8: pd.DataFrame, wall_time_s: float) -> tuple[dict, dict]:
    """The stage's headline (standard QAT's clean accuracy per bit-width, Table 1's LAVAN ASR per view in each
    regime made: keys ``lavan_asr_*`` at the paper's size, ``lavan_asr_*_matched`` at the matched size; the wall
    time) and the details (every model's accuracy, Table 1's ASR of every attack and Table 8's ASR in the deciding
    regime, evaluation times, provenance). ``table1``: Table 1 by regime; ``table1_records`` and ``table8``: the
    deciding regime's (:func:`triqdef.stages.regimes.deciding_regime`)."""
    from triqdef.attacks.patchsets import PAPER
    from triqdef.stages.regimes import deciding_regime

    accuracy = accuracy_by_model(table4)
    views = list(table1_views(inp))
    low = min(inp.qat_meta["bits"])
    headline = {f"qat_acc_{b}": a for b, a in accuracy[inp.qat_label].items()}  # flat keys: one column each
    for regime in sorted(table1, key=lambda r: r != PAPER):
        if S.ATTACK not in table1[regime]:  # a regime not made (its table says why)
            continue
        lavan, suffix = rates_by_row(table1[regime], S.ATTACK, views)[S.LAVAN], "" if regime == PAPER else f"_{regime}"
        headline.update({f"lavan_asr_whitebox{suffix}": lavan[S.FP_WHITEBOX_VIEW],
                         f"lavan_asr_{low}bit{suffix}": lavan[S.qat_view(low)]})  # the paper's headline: the lowest bit-width
    headline["stage_wall_time_s"] = round(wall_time_s, 1)
    deciding = deciding_regime(inp)
    details = {"profile": inp.profile, "n_test": int(inp.n_test), "data_source": inp.splits.source["source"],
               "accuracy": accuracy, "regime": deciding,
               "table1_asr": rates_by_row(table1[deciding], S.ATTACK, views),
               "table8_asr": {f"{r[S.SOURCE]} -> {r[S.TARGET]} {r[S.ATTACK]}": {c: r[c] for c in table8.columns
                                                                              if c == S.FP_VIEW or S.is_bit_view(c)}
                              for _, r in table8.iterrows()} if S.SOURCE in table8 else {},
               "seconds_per_patch_evaluation": {"n_images": int(len(inp.test_y)),
                                                **table1_records.groupby("view")["eval_s"].mean().round(2).to_dict()},
               "provenance": inp.meta}
    return headline, details
