"""Table 5's comparisons and claims, computed from its outcome store alone (issue 29, items 1, 2, 5 and 7;
docs/design.md#outcome-stores).

Stage ``training`` writes every (patch, view, image) outcome of Table 5 to ``results/outcomes/table5[_matched].parquet``
(:mod:`triqdef.eval.outcome_store`); the stage's comparison table and captions, and ``triqdef report``, both call
:func:`evaluate` on that store, so a verdict never depends on a table written earlier.

- Two models on one patch group (:func:`model_difference`) are compared on *common* images: each pair of patches
  on the images eligible for both models (clean-correct on both, label ≠ target). The shared sets (seen, unseen)
  pair as the very same patches; the groups where each model has its own patches (white-box, PatchAttack) pair by
  target (one patch per class on every model).
- Two patch groups on one model and view (:func:`set_difference`, e.g. unseen minus seen) share the images; their
  patches are drawn on their own.
- Every interval is studentised over patches (``method="t"``: the coverage simulation's choice,
  docs/design.md#interval-coverage) and carries its one-sided p-values, so that a claim made at several bit-widths
  is decided familywise (Holm) by whoever combines them.
- The noise baseline (issue 29, item 7): set ``noise`` holds a uniform random patch of the same size, target and
  location as each seen patch. A relative claim ("X % lower") is judged only where both models' rates stand
  clearly above that baseline (the 95 % interval of rate − noise above 0); elsewhere its verdict is
  :data:`AT_FLOOR`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from triqdef.errors import TriqdefError
from triqdef.eval import intervals
from triqdef.eval.intervals import HOLDS, INCONCLUSIVE, Interval
from triqdef.eval.outcome_store import BY_TARGET, RANDOM_BITS, SAME_PATCHES, NoCommonImages, outcomes, paired
from triqdef.eval.robustness import UNSEEN_SETS
from triqdef.reporting.schemas import (DWQ, GAP, LAVAN, PATCHATTACK, PBAT, QADT_R, SEEN, STANDARD_QAT, TRIQDEF, UNSEEN,
                                       WHITEBOX)

#: Table 5's groups beyond seen / unseen / white-box: PatchAttack's patches (each model queried itself) and the
#: random patches of the noise baseline.
BLACKBOX, NOISE = "blackbox", "noise"
#: The store's sets of each patch group of Table 5.
GROUP_SETS = {SEEN: (SEEN,), UNSEEN: UNSEEN_SETS, WHITEBOX: (WHITEBOX,), BLACKBOX: (BLACKBOX,), NOISE: (NOISE,)}
#: The groups where every model has its own patches (paired by target, not as the same patches).
OWN_PATCHES = (WHITEBOX, BLACKBOX)
#: A relative claim where a rate does not stand clearly above the random patch's (issue 29, item 7).
AT_FLOOR = "at the noise floor"
N_BOOT = 2000

#: Table 5's paired comparisons, each on "the first model's ASR is lower": TriQDef against each other model, and
#: QADT-R against the baselines it claims to beat (its summary: "up to 25 % lower than PBAT and DWQ").
PAIRS = ((TRIQDEF, PBAT), (TRIQDEF, DWQ), (TRIQDEF, STANDARD_QAT), (TRIQDEF, QADT_R), (QADT_R, PBAT), (QADT_R, DWQ))
#: Section 4.3: on unseen GAP patches TriQDef's ASR rises "only marginally" (at most this many points over the seen
#: patches, our reading of "+2.1 %") and PBAT's "often by over 15 %" (points).
MARGINAL_RISE, PBAT_RISE = 0.03, 0.15
#: The relative reductions the paper claims for TriQDef (read as relative): unseen LAVAN ASR "over 40 %" below
#: PBAT's (abstract, section 4.3); seen ASR at 2 bits "over 20 %" below PBAT's and "over 50 %" below DWQ's. Each is
#: decided on the paired interval of ``TriQDef − (1 − reduction) × other``.
UNSEEN_REDUCTION = {PBAT: 0.40}
SEEN_LOWEST_BITS_REDUCTION = {PBAT: 0.20, DWQ: 0.50}


def view_name(bits: int) -> str:
    """The tables' name of a store bit-width: ``4-bit``, or ``random`` (DWQ's random-precision inference)."""
    return "random" if bits == RANDOM_BITS else f"{bits}-bit"


class Indexed:
    """A Table 5 store split once by (model, set, attack, bits), so that each of the few hundred selections of
    :func:`evaluate` is a lookup, not a scan of every row."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.parts = {tuple(k): g for k, g in frame.groupby(["model", "set", "attack", "bits"], sort=False)}

    def rows(self, model: str, group: str, attack: str, bits: int) -> pd.DataFrame:
        """The rows of one patch group at one view of one model (empty when there are none)."""
        if group not in GROUP_SETS:
            raise TriqdefError(f"patch group {group!r}: expected one of {', '.join(GROUP_SETS)}")
        found = [self.parts[k] for k in ((model, s, attack, bits) for s in GROUP_SETS[group]) if k in self.parts]
        return pd.concat(found) if len(found) > 1 else found[0] if found else self.frame.iloc[:0]


def _indexed(store) -> Indexed:
    return store if isinstance(store, Indexed) else Indexed(store)


def _where(model: str, group: str, attack: str, bits: int) -> dict:
    return {"model": model, "set": list(GROUP_SETS[group]), "attack": attack, "bits": bits}


def model_difference(store: pd.DataFrame, a: str, b: str, group: str, attack: str, bits: int, n_boot: int = N_BOOT,
                     seed: int = 0, scale: float = 1.0) -> tuple[Interval, dict]:
    """``rate(a) − scale · rate(b)`` of one patch group at one view of two models, on common images (module
    docstring), studentised over patches; and the details: both rates on those images, the common images. No common
    image at all gives :func:`triqdef.eval.intervals.undecided` (inconclusive; the caller's table shows 0 images)."""
    store = _indexed(store)
    pair_by = BY_TARGET if group in OWN_PATCHES else SAME_PATCHES
    return common_image_difference(store.rows(a, group, attack, bits), _where(a, group, attack, bits),
                             _where(b, group, attack, bits), store.rows(b, group, attack, bits), pair_by, n_boot, seed,
                             scale)


def common_image_difference(frame: pd.DataFrame, a: dict, b: dict, frame_b: pd.DataFrame | None = None,
                      pair_by: tuple[str, ...] = SAME_PATCHES, n_boot: int = N_BOOT, seed: int = 0,
                      scale: float = 1.0) -> tuple[Interval, dict]:
    """``rate(a) − scale · rate(b)`` of two store selections (``b`` of ``frame_b`` when given), paired by
    ``pair_by`` on common images, studentised over patches; and the details (both rates on those images, the
    common images). No common image gives :func:`triqdef.eval.intervals.undecided`."""
    try:
        p = paired(frame, a, b, frame_b=frame_b, pair_by=pair_by)
    except NoCommonImages:   # (tiny smoke models at 2 bits) nothing to compare: undecided, not an error here
        return intervals.undecided(n_boot), {"rate": float("nan"), "rate_against": float("nan"), "n_common": 0}
    ci = intervals.difference(p.a, p.b, n_boot, seed, scale=scale, method="t")
    return ci, {"rate": p.a.rate(), "rate_against": p.b.rate(), "n_common": p.n_common}


def set_difference(store: pd.DataFrame, model: str, attack: str, bits: int, group_a: str, group_b: str,
                   n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """``rate(group_a) − rate(group_b)`` on one model and view: the same test images, each group's patches drawn
    on their own (two different patch sets), studentised over patches."""
    store = _indexed(store)
    a = outcomes(store.rows(model, group_a, attack, bits), **_where(model, group_a, attack, bits))
    b = outcomes(store.rows(model, group_b, attack, bits), **_where(model, group_b, attack, bits))
    if a.n_images != b.n_images:
        raise TriqdefError(f"{model} {view_name(bits)} {attack}: groups {group_a} and {group_b} were evaluated on "
                           f"{a.n_images} and {b.n_images} images: expected the same test images")
    return intervals.difference(a, b, n_boot, seed, same_patches=False, method="t")


def evidence(statement: str, ci: Interval, claim: str, margin: float, topic: str, **extra) -> dict:
    """A claim record (:func:`triqdef.eval.intervals.claim_evidence`) with its one-sided p-values, for Holm."""
    p_holds, p_fails = intervals.one_sided_p(ci, claim, margin)
    return dict(intervals.claim_evidence(statement, ci, claim, margin), topic=topic, p_holds=p_holds, p_fails=p_fails,
                method=ci.method, **extra)


def _has(store: Indexed, model: str, group: str, attack: str, bits: int) -> bool:
    return not store.rows(model, group, attack, bits).empty


def views(store) -> list[int]:
    """The store's bit-widths from high to low, random precision (if any) last."""
    present = {int(k[3]) for k in _indexed(store).parts}
    bits = sorted(present - {RANDOM_BITS}, reverse=True)
    return bits + ([RANDOM_BITS] if RANDOM_BITS in present else [])


def group_of(set_name: str) -> str:
    """The Table 5 group of a store set (every unseen set counts as ``unseen``)."""
    return next((g for g, sets in GROUP_SETS.items() if set_name in sets), set_name)


def rate_table(store: pd.DataFrame) -> pd.DataFrame:
    """Table 5's rates (%) from the store: one row per (model, group), a column ``<attack> <view>`` per attack and
    view present, each the mean over the group's patches of each patch's rate on its own eligible images."""
    store = _indexed(store)
    keys = dict.fromkeys((model, group_of(set_), attack, int(bits)) for model, set_, attack, bits in store.parts)
    rows = {}
    for model, group, attack, bits in keys:
        rate = outcomes(store.rows(model, group, attack, bits)).rate()
        rows.setdefault((model, group), {})[f"{attack} {view_name(bits)}"] = 100 * rate
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "group"])
    ordered = [f"{a} {view_name(b)}" for a in sorted({k[2] for k in keys}) for b in views(store)]
    return table[[c for c in ordered if c in table.columns]]


def comparisons(store: pd.DataFrame, pairs: Sequence[tuple[str, str]] = PAIRS, groups: Sequence[str] = (SEEN, UNSEEN),
                n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (group, attack, view, pair ``(A, B)``) present in the store: both rates on the common images,
    ``A − B`` with its 95 % interval (points), the common images, the patches, the verdict on "A is lower" and its
    one-sided p-values."""
    store, rows = _indexed(store), []
    for group in groups:
        for attack in sorted({k[2] for k in store.parts if k[1] in GROUP_SETS[group]}):
            for bits in views(store):
                for a, b in pairs:
                    if not (_has(store, a, group, attack, bits) and _has(store, b, group, attack, bits)):
                        continue
                    ci, d = model_difference(store, a, b, group, attack, bits, n_boot, seed)
                    p_holds, p_fails = intervals.one_sided_p(ci, "lower")
                    rows.append({"group": group, "attack": attack, "view": view_name(bits), "model": a, "against": b,
                                 "rate": 100 * d["rate"], "rate_against": 100 * d["rate_against"],
                                 "difference": 100 * ci.value, "low": 100 * ci.low, "high": 100 * ci.high,
                                 "n_images": d["n_common"], "n_patches": ci.n_patches, "claim": f"{a} lower than {b}",
                                 "verdict": intervals.verdict(ci, "lower"), "p_holds": p_holds, "p_fails": p_fails})
    return pd.DataFrame(rows)


def above_noise(store: pd.DataFrame, model: str, group: str, attack: str, bits: int, n_boot: int = N_BOOT,
                seed: int = 0) -> tuple[bool, Interval]:
    """Whether ``model``'s rate on ``group`` stands clearly above the random patch's at that view (the 95 %
    interval of the difference above 0), and that interval."""
    ci = set_difference(_indexed(store), model, attack, bits, group, NOISE, n_boot, seed)
    return intervals.verdict(ci, "higher") == HOLDS, ci


def reduction(store: pd.DataFrame, group: str, attack: str, bits: int, other: str, share: float, topic: str,
              n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """TriQDef's rate at least ``share`` (relative) below ``other``'s, on common images: the interval of
    ``TriQDef − (1 − share) × other``, claimed below 0; judged only where both rates stand clearly above the
    noise baseline (otherwise verdict :data:`AT_FLOOR`, no p-values)."""
    store, scale = _indexed(store), 1 - share
    ci, d = model_difference(store, TRIQDEF, other, group, attack, bits, n_boot, seed, scale=scale)
    statement = (f"{view_name(bits)} {group} {attack} ASR, TriQDef − {scale:g} × {other} (points; "
                 f"{100 * share:.0f} % lower)")
    ev = evidence(statement, ci, "lower", 0.0, topic, n_common=d["n_common"])
    if _has(store, TRIQDEF, NOISE, attack, bits):
        floor = [m for m in (TRIQDEF, other) if not above_noise(store, m, group, attack, bits, n_boot, seed)[0]]
        if floor:
            ev.update(verdict=AT_FLOOR, p_holds=float("nan"), p_fails=float("nan"),
                      statement=f"{statement}; {' and '.join(floor)} not clearly above the random patch")
    return ev


def claims(store: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """Table 5's claims beyond "A is lower" (:func:`comparisons`), each an :func:`evidence` record with its topic:

    - ``unseen_rise``: GAP unseen minus seen ASR, TriQDef's below :data:`MARGINAL_RISE`, PBAT's above
      :data:`PBAT_RISE`, at every bit-width;
    - ``pbat_unseen`` (QADT-R's abstract): PBAT's unseen minus seen ASR above 0, both attacks;
    - ``whitebox``: each model's own white-box LAVAN patches, TriQDef's ASR below PBAT's, DWQ's and QADT-R's;
    - ``patchattack``: TriQDef's PatchAttack ASR below PBAT's and DWQ's (each model queried itself);
    - ``unseen_reduction`` (:data:`UNSEEN_REDUCTION`, LAVAN, every bit-width) and ``seen_lowest_bits``
      (:data:`SEEN_LOWEST_BITS_REDUCTION`, both attacks, the lowest bit-width), gated by the noise baseline."""
    store, out = _indexed(store), []
    bit_views = [b for b in views(store) if b != RANDOM_BITS]
    for bits in bit_views:
        view = view_name(bits)
        for model, claim, margin in ((TRIQDEF, "lower", MARGINAL_RISE), (PBAT, "higher", PBAT_RISE)):
            if _has(store, model, SEEN, GAP, bits) and _has(store, model, UNSEEN, GAP, bits):
                ci = set_difference(store, model, GAP, bits, UNSEEN, SEEN, n_boot, seed)
                out.append(evidence(f"{view} {model} GAP unseen − seen ASR (points)", ci, claim, margin, "unseen_rise"))
        for attack in (LAVAN, GAP):
            if _has(store, PBAT, SEEN, attack, bits) and _has(store, PBAT, UNSEEN, attack, bits):
                ci = set_difference(store, PBAT, attack, bits, UNSEEN, SEEN, n_boot, seed)
                out.append(evidence(f"{view} {PBAT} {attack.upper()} unseen − seen ASR (points)", ci, "higher", 0.0,
                                    "pbat_unseen"))
        for other in (PBAT, DWQ, QADT_R):
            if _has(store, TRIQDEF, WHITEBOX, LAVAN, bits) and _has(store, other, WHITEBOX, LAVAN, bits):
                ci, d = model_difference(store, TRIQDEF, other, WHITEBOX, LAVAN, bits, n_boot, seed)
                out.append(evidence(f"{view} white-box LAVAN ASR, TriQDef − {other} (points)", ci, "lower", 0.0,
                                    "whitebox", n_common=d["n_common"]))
        for other in (PBAT, DWQ):
            if _has(store, TRIQDEF, BLACKBOX, PATCHATTACK, bits) and _has(store, other, BLACKBOX, PATCHATTACK, bits):
                ci, d = model_difference(store, TRIQDEF, other, BLACKBOX, PATCHATTACK, bits, n_boot, seed)
                out.append(evidence(f"{view} PatchAttack ASR, TriQDef − {other} (points)", ci, "lower", 0.0,
                                    "patchattack", n_common=d["n_common"]))
        for other, share in UNSEEN_REDUCTION.items():
            if _has(store, TRIQDEF, UNSEEN, LAVAN, bits) and _has(store, other, UNSEEN, LAVAN, bits):
                out.append(reduction(store, UNSEEN, LAVAN, bits, other, share, "unseen_reduction", n_boot, seed))
    if bit_views:
        lowest = bit_views[-1]
        for attack in (LAVAN, GAP):
            for other, share in SEEN_LOWEST_BITS_REDUCTION.items():
                if _has(store, TRIQDEF, SEEN, attack, lowest) and _has(store, other, SEEN, attack, lowest):
                    out.append(reduction(store, SEEN, attack, lowest, other, share, "seen_lowest_bits", n_boot, seed))
    return out


def familywise(claims: Sequence[dict], alpha: float = (1 - intervals.LEVEL) / 2) -> str:
    """One verdict for claims that must all hold (several bit-widths or attacks): *holds* when each holds (an
    intersection-union test); *does not hold* when Holm's procedure over their ``p_fails`` rejects one at
    familywise level ``alpha``; :data:`AT_FLOOR` when, short of that, some claim sits at the noise floor (it cannot
    hold everywhere nor be refuted there); otherwise inconclusive."""
    claims = list(claims)
    verdict = intervals.holm_verdict([c["verdict"] for c in claims], [c.get("p_fails", float("nan")) for c in claims],
                                     alpha)
    return AT_FLOOR if verdict == INCONCLUSIVE and any(c["verdict"] == AT_FLOOR for c in claims) else verdict


def evaluate(store: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`comparisons` and :func:`claims` of one Table 5 store."""
    store = _indexed(store)
    return comparisons(store, n_boot=n_boot, seed=seed), claims(store, n_boot, seed)
