"""Stage ``clean_outcomes``: every defended model's prediction on every test image at every bit-width, as an outcome
store (issue 29, item 1: the clean-accuracy claim rebuilt from per-image outcomes; docs/design.md#clean-outcomes).

``results/outcomes/clean.parquet`` holds one row per (model, bit-width, test image) in the outcome store's schema
(:mod:`triqdef.eval.outcome_store`), for an evaluation without a patch: attack ``"none"``, set ``"clean"``, patch
id 0, target and location −1, and the prediction as both ``clean_pred`` and ``patched_pred``. Accuracies and their
differences are functions of these rows (:func:`clean_claims`), so the claim "TriQDef keeps clean accuracy close to
standard QAT" (paper Table 4, §4.6) is decided *paired*: both models on the same test images, each replicate of
the bootstrap drawing the same images for both. Table 4 (stage ``training``) reports the same accuracies.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from triqdef import paths
from triqdef.errors import TriqdefError

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant")
#: How clean rows fill the patch columns of the outcome store.
NO_ATTACK, CLEAN_SET = "none", "clean"
#: "Close to standard QAT": no bit-width more than 2.5 points below it (the paper's own Table 4 gap reaches -2.4).
CLOSE_CLEAN_POINTS = -2.5
#: Bootstrap replicates of each paired difference.
N_BOOT = 2000


def store_path():
    """``results/outcomes/clean.parquet``."""
    return paths.results_dir() / "outcomes" / "clean.parquet"


def store_rows(model: str, bits: int, predictions, labels, seed: int) -> pd.DataFrame:
    """The outcome-store rows of ``model`` at ``bits`` on the test images (ids 0 … N − 1, in the prepared test split's
    order): no patch, so the prediction fills both prediction columns."""
    predictions, labels = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if predictions.shape != labels.shape:
        raise TriqdefError(f"clean predictions of {model} at {bits} bits: {predictions.shape[0]} for "
                           f"{labels.shape[0]} labels, expected one per test image")
    return pd.DataFrame({"model": model, "seed": seed, "bits": bits, "attack": NO_ATTACK, "set": CLEAN_SET,
                         "patch_id": 0, "target": -1, "loc_y": -1, "loc_x": -1,
                         "image_id": np.arange(len(labels)), "label": labels, "clean_pred": predictions,
                         "patched_pred": predictions})


def correct(store: pd.DataFrame, model: str, bits: int) -> pd.Series:
    """Whether ``model`` classified each test image correctly at ``bits`` (indexed by image id); a model or
    bit-width the store lacks ends with one TriqdefError line."""
    rows = store[(store["model"] == model) & (store["bits"] == bits) & (store["set"] == CLEAN_SET)]
    if rows.empty:
        have = sorted(set(zip(store["model"], store["bits"])))
        raise TriqdefError(f"clean outcome store has no {model} at {bits} bits: expected one of {have}")
    return (rows["clean_pred"] == rows["label"]).set_axis(rows["image_id"].to_numpy())


def accuracy_table(store: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per model (rows, in store order) and bit-width (columns ``<b>bit``, widest first), with the
    number of test images."""
    clean = store[store["set"] == CLEAN_SET]
    acc = clean.assign(correct=clean["clean_pred"] == clean["label"]).groupby(["model", "bits"], sort=False)["correct"]
    t = (100 * acc.mean()).unstack("bits")
    t = t[sorted(t.columns, reverse=True)].rename(columns=lambda b: f"{b}bit")
    t["n_test"] = clean.groupby("model", sort=False)["image_id"].nunique()
    return t.loc[list(dict.fromkeys(clean["model"]))]


def clean_claims(store: pd.DataFrame, model: str, reference: str, margin_points: float = CLOSE_CLEAN_POINTS,
                 n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """At each bit-width both models have: accuracy of ``model`` − ``reference`` (points) on the same test images,
    with its paired 95 % bootstrap interval (:func:`triqdef.eval.accuracy_claims.paired_accuracy_claim`: the same
    images drawn for both), claimed higher than ``margin_points``; each record carries its one-sided p-values for
    the familywise (Holm) verdict of :func:`triqdef.eval.defense_claims.familywise`."""
    from triqdef.eval.accuracy_claims import paired_accuracy_claim

    def bits_of(m):
        return set(store.loc[store["model"] == m, "bits"])

    common = sorted(bits_of(model) & bits_of(reference), reverse=True)
    if not common:
        raise TriqdefError(f"clean outcome store: {model} and {reference} share no bit-width, expected both "
                           "evaluated at the same bit-widths")
    out = []
    for bits in common:
        a, b = correct(store, model, bits), correct(store, reference, bits)
        view = "32-bit" if bits == 32 else f"{bits}-bit"
        out.append(paired_accuracy_claim(a, b, f"{view} clean accuracy, {model} − {reference} (points)", "higher",
                                         margin_points / 100, n_boot, seed + bits, topic="clean_cost", bits=bits))
    return out


def run_clean_outcomes(cfg, progress: bool = True) -> dict:
    """Stage ``clean_outcomes``: the store ``results/outcomes/clean.parquet`` and the metrics ``clean_outcomes``."""
    from tqdm.auto import tqdm

    from triqdef.eval import outcome_store
    from triqdef.eval.accuracy import predict
    from triqdef.meta import provenance, write_metrics
    from triqdef.stages import common
    from triqdef.stages.defense import defended_models

    start = time.perf_counter()
    splits = common.load_data(cfg)
    models, metas = defended_models(cfg.model.name)
    bits_list = sorted(set(cfg.quant.bits), reverse=True)
    frames, seconds = [], {}
    for label, model in tqdm(list(models.items()), desc="clean predictions", unit="model", disable=not progress):
        t0 = time.perf_counter()
        for bits in bits_list:
            frames.append(store_rows(label, bits, predict(model, splits.test.images, bits=bits).numpy(),
                                     splits.test.labels.numpy(), cfg.base.seed))
        seconds[label] = round(time.perf_counter() - t0, 2)
    store = pd.concat(frames, ignore_index=True)
    meta = provenance(cfg, {"data": common.data_record(splits), "n_test": int(len(splits.test.labels)),
                            "checkpoints": {k: m.get("commit") for k, m in metas.items()}, "eval_seconds": seconds})
    outcome_store.write(store, store_path(), info={"what": "clean predictions, no patch", "data": meta["data"]["source"]})
    table = accuracy_table(store)
    wall = time.perf_counter() - start
    headline = {"accuracy": {m: {c: round(v, 2) for c, v in row.items() if c != "n_test"} for m, row in table.iterrows()},
                "n_test": int(len(splits.test.labels)), "stage_wall_time_s": round(wall, 1)}
    write_metrics("clean_outcomes", headline, meta)
    return headline
