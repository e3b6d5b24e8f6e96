"""Patch transfer: success of a set of patches on a set of views (model at a bit-width), as records.

Records first, tables after (RobustBench style): :func:`transfer_records`
returns one row per (patch, view) with the targeted ASR, the untargeted
fooling rate and the common-subset ASR, each with its number of images, and
the per-image outcomes behind them; :func:`pivot_rates` turns them into a
paper-style table (mean over the patches of a pool, docs/design.md#success-rate),
each rate with its 95 % bootstrap interval over images and patches
(columns ``<view> low`` / ``<view> high``; docs/design.md#intervals-and-verdicts).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef.attacks.patches import Patch, patched_predictions
from triqdef.attacks.success import common_subset, eligible_images, fooling_rate, targeted_asr
from triqdef.errors import TriqdefError
from triqdef.eval.accuracy import predict
from triqdef.eval.intervals import Outcomes, bootstrap_rate


def view_predictions(views: dict[str, tuple[nn.Module, int | None]], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Clean predictions of every view."""
    return {name: predict(model, images, bits) for name, (model, bits) in views.items()}


def transfer_records(patches: list[Patch], views: dict[str, tuple[nn.Module, int | None]], images: torch.Tensor,
                     labels: torch.Tensor, clean: dict[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """One record per (patch, view): ASR, fooling rate, common-subset ASR and their denominators.

    ``images`` are uint8 or float in [0, 1]; ``views`` maps a label to
    ``(model, bits)`` (``bits=None`` for a float model).
    """
    clean = clean or view_predictions(views, images)
    common = common_subset(list(clean.values()), labels)
    rows = []
    for i, patch in enumerate(patches):
        for name, (model, bits) in views.items():
            t0 = time.perf_counter()
            adv = patched_predictions(model, images, patch, bits)
            seconds = time.perf_counter() - t0
            asr = targeted_asr(clean[name], adv, labels, patch.target)
            fool = fooling_rate(clean[name], adv, labels, patch.target)
            com = targeted_asr(clean[name], adv, labels, patch.target, subset=common)
            eligible = eligible_images(clean[name], labels, patch.target)
            rows.append({"patch": i, "set": patch.info.get("set"), "attack": patch.attack, "size": patch.size,
                         "target": patch.target, "source_bits": patch.source_bits, "view": name,
                         "asr": 100 * asr.value, "n_asr": asr.n, "fooling": 100 * fool.value, "n_fooling": fool.n,
                         "asr_common": 100 * com.value, "n_common": com.n, "eval_s": seconds,
                         "n_images": int(labels.numel()),
                         # per-image outcomes, for the intervals (object columns: never written to a table)
                         "hits_asr": (adv == patch.target).cpu().numpy(), "hits_fooling": (adv != labels).cpu().numpy(),
                         "eligible": eligible.cpu().numpy(), "eligible_common": (eligible & common).cpu().numpy(),
                         # what the outcome store keeps (triqdef.eval.outcome_store.from_records)
                         "loc_y": int(patch.location[0]), "loc_x": int(patch.location[1]),
                         "clean_pred": clean[name].cpu().numpy(), "patched_pred": adv.cpu().numpy()})
    return pd.DataFrame(rows)


#: The per-image outcome columns of a record behind each rate: (hits, eligible).
OUTCOME_COLUMNS = {"asr": ("hits_asr", "eligible"), "fooling": ("hits_fooling", "eligible"),
                   "asr_common": ("hits_asr", "eligible_common")}
#: Bootstrap replicates of every table interval.
N_BOOT = 2000


def records_outcomes(records: pd.DataFrame, value: str = "asr") -> Outcomes:
    """The per-image outcomes of ``records`` (one row per patch, all on the same images) behind ``value``."""
    hits, eligible = OUTCOME_COLUMNS[value]
    return Outcomes(np.stack(list(records[hits])), np.stack(list(records[eligible])))


def select_outcomes(records: pd.DataFrame, value: str = "asr", **where) -> Outcomes:
    """The outcomes behind ``value`` of the records whose columns equal ``where`` (e.g. ``attack="lavan",
    view="2-bit"``), one row per patch in a fixed patch order (so that two selections of the same patches pair)."""
    mask = np.ones(len(records), dtype=bool)
    for column, wanted in where.items():
        mask &= (records[column] == wanted).to_numpy()
    rows = records[mask]
    if rows.empty:
        raise TriqdefError(f"no records with {where}: expected at least one patch evaluated there")
    order = [c for c in ("patch_set", "set", "patch") if c in rows.columns]
    return records_outcomes(rows.sort_values(order) if order else rows, value)


def add_intervals(table: pd.DataFrame, records: pd.DataFrame, value: str, keys: list[str], columns: str,
                  views: list, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """``<view> low`` / ``<view> high`` beside each rate column of ``table`` (one row per ``keys``): the 95 %
    bootstrap interval (images and patches resampled) of the records of that row and view. Rates in percent."""
    out = table.copy()
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in records.groupby(keys, sort=False, dropna=False)}
    for view in views:
        lows, highs = [], []
        for _, row in out.iterrows():
            rows = groups.get(tuple(row[k] for k in keys), records.iloc[:0])
            rows = rows[rows[columns] == view]
            if rows.empty:
                lows.append(np.nan)
                highs.append(np.nan)
                continue
            ci = bootstrap_rate(records_outcomes(rows, value), n_boot, seed)
            lows.append(100 * ci.low)
            highs.append(100 * ci.high)
        position = out.columns.get_loc(view) + 1
        out.insert(position, f"{view} low", lows)
        out.insert(position + 1, f"{view} high", highs)
    return out


def patch_outcomes(patches: list[Patch], model: nn.Module, bits: int | None, images: torch.Tensor, labels: torch.Tensor,
                   clean: torch.Tensor) -> tuple[Outcomes, Outcomes]:
    """Per-image outcomes of ``patches`` on one view (``model`` at ``bits``), for the bootstrap intervals of
    :mod:`triqdef.eval.intervals`: targeted hits and fooling hits, each over the eligible images
    (docs/design.md#success-rate). ``clean``: the view's clean predictions."""
    targeted, fooled, eligible = [], [], []
    for patch in patches:
        adv = patched_predictions(model, images, patch, bits)
        eligible.append(eligible_images(clean, labels, patch.target).cpu().numpy())
        targeted.append((adv == patch.target).cpu().numpy())
        fooled.append((adv != labels).cpu().numpy())
    elig = np.stack(eligible)
    return Outcomes(np.stack(targeted), elig), Outcomes(np.stack(fooled), elig)


def patch_counts(records: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Number of patches per group of ``keys``. A patch is a (``patch_set``, ``patch``) pair when the records carry
    the set (indices restart in every set, so a group of several sets holds each index several times)."""
    patch_key = ["patch_set", "patch"] if "patch_set" in records else ["patch"]
    return records.drop_duplicates([*keys, *patch_key]).groupby(keys, sort=False).size()


def pivot_rates(records: pd.DataFrame, value: str = "asr", index=("attack",), columns: str = "view",
                column_order: list[str] | None = None) -> pd.DataFrame:
    """Mean of ``value`` over patches, one row per ``index``, one column per view, plus the mean
    number of images each rate is computed over (``n`` columns) and the number of patches."""
    n_col = {"asr": "n_asr", "fooling": "n_fooling", "asr_common": "n_common"}[value]
    idx = list(index)
    table = records.pivot_table(index=idx, columns=columns, values=value, aggfunc="mean")
    counts = records.pivot_table(index=idx, columns=columns, values=n_col, aggfunc="mean").round(0)
    order = column_order or list(table.columns)
    # reindex, not index: a view whose every rate is NaN (no image in the common subset) is dropped by
    # pivot_table and comes back as an empty column
    table = table.reindex(columns=order)
    counts = counts.reindex(columns=order).add_prefix("n ")
    npatch = patch_counts(records, idx).rename("patches")
    table = table.join(counts).join(npatch, how="outer").reset_index()
    return add_intervals(table, records, value, idx, columns, order)


def asr_by_model_and_set(views: Mapping[str, Mapping[str, tuple[nn.Module, int | None]]],
                         patch_sets: Mapping[str, list[Patch]], images: torch.Tensor, labels: torch.Tensor
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every patch set on every model's views (``views``: model label -> view label -> ``(model, bits)``).

    Returns the records (:func:`transfer_records`, with ``model`` and ``patch_set`` columns) and the ASR
    table: one row per (model, patch set) in the given order, one column per view (mean over the patches,
    with its 95 % interval), in the order of the first model's views (every model has the same view labels:
    Table 2).
    """
    records = pd.concat([transfer_records(ps, views[label], images, labels).assign(model=label, patch_set=name)
                         for label in views for name, ps in patch_sets.items()], ignore_index=True)
    table = records.pivot_table(index=["model", "patch_set"], columns="view", values="asr", aggfunc="mean", sort=False)
    order = list(next(iter(views.values())))
    return records, add_intervals(table[order].reset_index(), records, "asr", ["model", "patch_set"], "view", order)
