"""Cross-bit transfer inside one switchable-precision model (issue 30, item 1; docs/design.md#cross-bit-transfer).

TriQDef's title claim: a patch made on one bit-width of the shared backbone should not transfer to its other
bit-widths. Measured directly, per defended model:

1. :func:`source_patches`: LAVAN patches made on the model itself at each *source* bit-width s (white-box, on that
   view only), one per class, with the same targets and starting points at every s and for every model, so that
   the patches pair by target across bit-widths and models;
2. :func:`outcome_rows`: every patch evaluated at every *target* bit-width t of the same model, one outcome-store
   row per (patch, image) (:mod:`triqdef.eval.outcome_store`; set ``cross_bit@<s>``, view bit-width ``t``);
3. :func:`transfer_matrix`: the targeted ASR of each (s, t) with its interval, the diagonal (t = s) being the
   white-box attack at s;
4. :func:`ratio_difference`: the *transfer ratio* r(s, t) = ASR(s → t) / ASR(s → s), the share of its white-box
   success that a patch keeps at another bit-width, compared between two models (e.g. TriQDef against standard
   QAT): r_A − r_B with a paired bootstrap interval. The four rates behind it are taken on common images (eligible
   at both views of both models) and the patches are paired by target; every replicate draws the same images and
   the same targets for all four, and recomputes both ratios.

"TriQDef cuts cross-bit transfer" holds against a baseline where r_TriQDef − r_baseline < 0 at every off-diagonal
(s, t), decided familywise (:func:`triqdef.eval.intervals.familywise_verdict`, Holm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef import quant
from triqdef.attacks.patches import Patch, patched_predictions
from triqdef.config import PatchParams
from triqdef.errors import TriqdefError
from triqdef.eval import intervals
from triqdef.eval.accuracy import predict
from triqdef.eval.intervals import Interval, Outcomes
from triqdef.eval.outcome_store import COLUMNS, NoCommonImages, aligned, outcomes

ATTACK = "lavan"


def set_name(source_bits: int) -> str:
    """The outcome store's ``set`` of the patches made at ``source_bits``."""
    return f"cross_bit@{source_bits}"


def check_bits(model: nn.Module, bits: Sequence[int], name: str) -> list[int]:
    """``bits`` as a list of distinct bit-widths of ``model``; an empty list, a repeat or a bit-width the model
    lacks ends with one :class:`TriqdefError` line naming ``name`` (e.g. ``cross_bit.source_bits``)."""
    return check_bits_in(quant.model_bits(model), bits, name, "the model's")


def check_bits_in(have: Sequence[int], bits: Sequence[int], name: str, whose: str = "the model's") -> list[int]:
    """:func:`check_bits` against the bit-widths ``have`` (e.g. ``quant.bits``, before any model is loaded)."""
    have, bits = list(have), list(bits)
    if not bits:
        raise TriqdefError(f"parameter {name} is empty: expected one or more of {whose} bit-widths {have}")
    if len(set(bits)) != len(bits):
        raise TriqdefError(f"parameter {name} = {bits}: expected distinct bit-widths (one repeats)")
    missing = [b for b in bits if b not in have]
    if missing:
        raise TriqdefError(f"parameter {name} = {bits}: bit-width {missing[0]} is not one of {whose} {have}")
    return bits


def source_patches(model: nn.Module, source_bits: Sequence[int], images: torch.Tensor, labels: torch.Tensor, n: int,
                   cfg: PatchParams, steps: int, seed: int, model_name: str, restarts: int = 1,
                   progress=None) -> dict[int, list[Patch]]:
    """``n`` LAVAN patches (one per class when n = 10) made on ``model`` at each source bit-width, white-box, for
    ``steps`` steps on (``images``, ``labels``) (training images). The targets and starting points depend on
    ``seed`` only, so they are the same at every source bit-width and for every model. With ``restarts`` > 1 each
    patch is made from that many starting points and the one with the highest targeted success on those same
    images at its source bit-width is kept (:func:`best_of`). ``progress(s)``: called after each source."""
    from triqdef.eval.robustness import whitebox_patches

    out = {}
    for s in check_bits(model, source_bits, "cross_bit.source_bits"):
        tries = [whitebox_patches(model, [s], images, labels, n, cfg, steps, seed, model_name, start=r)
                 for r in range(restarts)]
        patches = tries[0] if restarts == 1 else best_of(model, tries, images, labels, s)
        for p in patches:
            p.info.update(set=set_name(s), restarts=restarts)
        out[s] = patches
        if progress is not None:
            progress(s)
    return out


def best_of(model: nn.Module, tries: Sequence[Sequence[Patch]], images: torch.Tensor, labels: torch.Tensor,
            bits: int) -> list[Patch]:
    """Per patch index (the same target in every try), the try whose patch succeeds on most of ``images`` (those
    whose label is not its target) at ``bits``; the first try on a tie."""
    chosen = []
    for candidates in zip(*tries):
        scores = [float(((patched_predictions(model, images, p, bits) == p.target) & (labels != p.target)).sum())
                  for p in candidates]
        chosen.append(candidates[int(np.argmax(scores))])
    return chosen


def outcome_rows(model: nn.Module, model_name: str, training_seed: int, patches: Mapping[int, Sequence[Patch]],
                 images: torch.Tensor, labels: torch.Tensor, target_bits: Sequence[int],
                 image_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Every patch of ``patches`` (source bit-width -> its patches) on every test image at every target
    bit-width of ``model``: outcome-store rows (:data:`triqdef.eval.outcome_store.COLUMNS`)."""
    targets = check_bits(model, target_bits, "cross_bit.target_bits")
    check_bits(model, list(patches), "cross_bit.source_bits")
    ids = np.arange(len(labels)) if image_ids is None else np.asarray(image_ids)
    frames = []
    for t in targets:
        clean = predict(model, images, t).numpy()
        for s, made in patches.items():
            for i, patch in enumerate(made):
                adv = patched_predictions(model, images, patch, t).numpy()
                frames.append(pd.DataFrame({
                    "model": model_name, "seed": training_seed, "bits": t, "attack": ATTACK, "set": set_name(s),
                    "patch_id": i, "target": int(patch.target), "loc_y": int(patch.location[0]),
                    "loc_x": int(patch.location[1]), "image_id": ids, "label": labels.numpy(), "clean_pred": clean,
                    "patched_pred": adv}))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


def transfer_matrix(frame: pd.DataFrame, model: str, n_boot: int = 2000, seed: int = 0,
                    method: str = "t") -> pd.DataFrame:
    """One row per (source, target) bit-width of ``model`` in ``frame``: the targeted ASR (%) of the patches made
    at the source, evaluated at the target, with its interval, patches and images (each patch on its own eligible
    images, as a table's single rate)."""
    rows = frame[frame["model"] == model]
    if rows.empty:
        raise TriqdefError(f"no cross-bit outcomes for model {model!r}: expected rows of sets cross_bit@<bits>")
    out = []
    for source in sorted({int(x.split("@")[1]) for x in rows["set"].unique() if x.startswith("cross_bit@")}, reverse=True):
        for target in sorted(rows["bits"].unique(), reverse=True):
            ci = intervals.bootstrap_rate(outcomes(rows, set=set_name(source), bits=int(target)), n_boot, seed, method)
            out.append({"model": model, "source_bits": source, "target_bits": int(target), "asr": 100 * ci.value,
                        "low": 100 * ci.low, "high": 100 * ci.high, "n_patches": ci.n_patches,
                        "n_images": ci.n_images, "method": ci.method})
    return pd.DataFrame(out)


def _ratio(off: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(diagonal > 0, off / diagonal, np.nan)


def ratio_replicates(frame: pd.DataFrame, model: str, source: int, target: int, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, np.ndarray, Outcomes]:
    """One model's transfer ratio r(s, t) = ASR(s → t) / ASR(s → s), its bootstrap replicates and the outcomes
    at t behind it: both rates on the images eligible at both bit-widths, patches paired by target; every
    replicate draws the same images and targets for both rates and recomputes the ratio."""
    if source == target:
        raise TriqdefError(f"transfer ratio at source = target = {source}: expected an off-diagonal pair")
    sel = [dict(model=model, set=set_name(source), bits=b) for b in (target, source)]
    (off, diag), _ = aligned([frame] * 2, sel)
    images, patches = intervals.resampling_counts(off.n_images, off.n_patches, n_boot, seed)
    reps = _ratio(intervals.replicates_of(off, images, patches), intervals.replicates_of(diag, images, patches))
    return float(_ratio(np.array(off.rate()), np.array(diag.rate()))), reps, off


def ratio_interval(frame: pd.DataFrame, model: str, source: int, target: int, n_boot: int = 2000, seed: int = 0,
                   method: str = "t") -> Interval:
    """One model's transfer ratio r(s, t) with its interval (:func:`ratio_replicates`)."""
    value, reps, off = ratio_replicates(frame, model, source, target, n_boot, seed)
    return intervals.interval_from(value, reps, off, n_boot, method)


def ratio_difference(frame: pd.DataFrame, model_a: str, model_b: str, source: int, target: int,
                     n_boot: int = 2000, seed: int = 0, method: str = "t") -> tuple[Interval, dict]:
    """r_A(s, t) − r_B(s, t), the transfer ratios of two models (module docstring), with its interval; and the
    details: each ratio, each of the four rates (%), the common images per target."""
    if source == target:
        raise TriqdefError(f"transfer ratio at source = target = {source}: expected an off-diagonal pair")
    sel = [dict(model=m, set=set_name(source), bits=b) for m in (model_a, model_b) for b in (target, source)]
    (a_off, a_diag, b_off, b_diag), per_target = aligned([frame] * 4, sel)
    images, patches = intervals.resampling_counts(a_off.n_images, a_off.n_patches, n_boot, seed)
    reps = [intervals.replicates_of(o, images, patches) for o in (a_off, a_diag, b_off, b_diag)]
    rate = [o.rate() for o in (a_off, a_diag, b_off, b_diag)]
    r_a, r_b = (float(_ratio(np.array(rate[0]), np.array(rate[1]))), float(_ratio(np.array(rate[2]), np.array(rate[3]))))
    diff_reps = _ratio(reps[0], reps[1]) - _ratio(reps[2], reps[3])
    ci = intervals.interval_from(r_a - r_b, diff_reps, a_off, n_boot, method)
    details = {"ratio_a": r_a, "ratio_b": r_b, "asr_a": [100 * rate[0], 100 * rate[1]],
               "asr_b": [100 * rate[2], 100 * rate[3]], "common_per_target": per_target,
               "n_common": int(a_off.eligible.any(0).sum())}
    return ci, details


def cuts_transfer(frame: pd.DataFrame, model: str, baseline: str, pairs: Sequence[tuple[int, int]],
                  n_boot: int = 2000, seed: int = 0, method: str = "t") -> tuple[str, pd.DataFrame]:
    """The verdict on "``model`` cuts cross-bit transfer against ``baseline``": r_model − r_baseline lower than 0
    at every (source, target) of ``pairs``, decided familywise (Holm); and one row per pair."""
    rows, cis = [], []
    for source, target in pairs:
        try:
            ci, d = ratio_difference(frame, model, baseline, source, target, n_boot, seed, method)
        except NoCommonImages:   # (tiny smoke models at 2 bits) the pair cannot be compared: it is not decided
            cis.append(intervals.undecided(n_boot))
            rows.append({"source_bits": source, "target_bits": target, "ratio": float("nan"),
                         "ratio_baseline": float("nan"), "difference": float("nan"), "low": float("nan"),
                         "high": float("nan"), "n_patches": 0, "n_common_images": 0, "p_holds": float("nan"),
                         "p_fails": float("nan")})
            continue
        cis.append(ci)
        p_holds, p_fails = intervals.one_sided_p(ci, "lower")
        rows.append({"source_bits": source, "target_bits": target, "ratio": d["ratio_a"], "ratio_baseline": d["ratio_b"],
                     "difference": ci.value, "low": ci.low, "high": ci.high, "n_patches": ci.n_patches,
                     "n_common_images": d["n_common"], "p_holds": p_holds, "p_fails": p_fails})
    # a ratio whose white-box rate is 0 (for either model) is undefined: its comparison cannot hold, nor fail
    defined = [ci for ci in cis if ci.method == "t"]
    verdict = intervals.familywise_verdict(defined, "lower") if defined else intervals.INCONCLUSIVE
    if len(defined) < len(cis) and verdict == intervals.HOLDS:
        verdict = intervals.INCONCLUSIVE
    return verdict, pd.DataFrame(rows)
