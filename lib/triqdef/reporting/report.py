"""``results/REPORT.md``: every claim of the paper beside our figure (stage ``report``).

Each claim names where the paper makes it, the paper's figure, ours (read from
``results/tables`` and ``results/metrics``), the profile, and a verdict:
``holds``, ``does not hold``, ``inconclusive at this sample size``, ``partly``,
or ``not measured`` (the result file is missing, e.g. a stage that has not run).
A claim that compares models on patches is decided from the paired-bootstrap
interval of the difference (the ``*_comparisons`` tables;
docs/design.md#intervals-and-verdicts), at the matched size when the patch stage
made it (the paper's regime of attack strength), else at 6×6. Where the paper contradicts
itself, the claim's note says so. Nothing here is typed in by hand except the
paper's numbers.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from triqdef import paths
from triqdef.meta import provenance, write_text
from triqdef.reporting import schemas as S
from triqdef.reporting.forest import Evidence, parse_claimed
from triqdef.eval.defense_claims import AT_FLOOR, familywise
from triqdef.eval.intervals import (FAILS, HOLDS, INCONCLUSIVE, MIN_PATCHES, TOO_FEW, claim_text as _interval_claim_text,
                                    overall_verdict)

#: The intervals the claim being evaluated reads (set by :func:`build_report` around each claim; :func:`_record`).
_READ: contextvars.ContextVar[list | None] = contextvars.ContextVar("triqdef_report_evidence", default=None)


def _record(regime: str, statement: str, value: float, low: float, high: float, claimed: str, verdict: str,
            n_images, n_patches, method: str | None = None) -> None:
    """Note one interval the current claim reads (for its sample sizes, the patch floor, the forest plot and its
    section's "Method" line: ``method``, the interval's own, when it says)."""
    read = _READ.get()
    if read is None:
        return
    direction, margin = parse_claimed(claimed)
    read.append(dict(regime=regime, statement=statement, value=float(value), low=float(low), high=float(high),
                     direction=direction, margin=margin, verdict=str(verdict), n_images=int(n_images),
                     n_patches=int(n_patches), method=method))


def _recorded(claims: list[dict], regime: str = "paper") -> list[dict]:
    """``claims`` (rates or differences in points), noted as read by the current claim."""
    for c in claims:   # a comparison of two models counts the images common to both (n_common), when it says
        _record(regime, c["statement"], c["value"], c["low"], c["high"], c["claim"], c["verdict"],
                c.get("n_common", c.get("n_images", 0)), c.get("n_patches", 0), c.get("method"))
    return claims


@dataclass
class Claim:
    where: str
    claim: str
    paper: str
    evaluate: Callable[[Path], tuple[str, str]]  # results dir -> (ours, verdict)
    note: str = ""
    method: str = "percentile"   # how its intervals were made: a key of METHOD_NOTES


class Missing(Exception):
    pass


class OutOfScope(Exception):
    pass


class NotInProfile(Exception):
    """The profile's params leave the run behind a claim out (a time-budget scale-down)."""


def _out_of_scope(results):
    raise OutOfScope("not part of this reproduction (CIFAR-10 ResNet-20, LAVAN and GAP)")


def _table(results: Path, name: str) -> pd.DataFrame:
    path = results / "tables" / f"{name}.csv"
    if not path.is_file():
        raise Missing(name)
    return pd.read_csv(path)


def _patch_table(results: Path, name: str) -> tuple[pd.DataFrame, str]:
    """A patch table in the regime its verdict is read in: ``<name>_matched`` when the matched-size table exists
    (docs/design.md#attack-regime), else ``<name>``; with the words that say which, to put before the figures."""
    matched = results / "tables" / f"{name}_matched.csv"
    table = pd.read_csv(matched) if matched.is_file() else None
    if table is None or "note" in table.columns:  # no matched regime (its table only says so)
        return _table(results, name), "[paper's size] "
    strength = results / "metrics" / "attack_strength.json"
    size = json.loads(strength.read_text()).get("matched_size") if strength.is_file() else None
    return table, (f"[{size}×{size}, matched size] " if size else "[matched size] ")


def _metrics(results: Path, name: str, folder: str = "metrics") -> dict:
    """A stage's headline numbers (``results/metrics/<name>.json``), or with ``folder="metadata"`` the
    details written beside them (:func:`triqdef.meta.write_metrics`)."""
    path = results / folder / f"{name}.json"
    if not path.is_file():
        raise Missing(name if folder == "metrics" else f"{folder}/{name}")
    return json.loads(path.read_text())


def _fmt(values, digits: int = 1) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


# --------------------------------------------------------------------------- section 2, appendix A


def _store_rate(results: Path, name: str, **where) -> float:
    """A rate (%) of a store selection, in the store's deciding regime (each patch on its own eligible images)."""
    from triqdef.eval import outcome_store

    _require_store(results, name)
    store = _store_indexed(_store_files(results, name)[0][1]).frame
    if outcome_store.select(store, **where).empty:   # a view this run did not evaluate
        return float("nan")
    return 100 * outcome_store.outcomes(store, **where).rate()


def _store_size(results: Path, name: str) -> str:
    """The words naming a store's deciding regime and size, before the figures."""
    from triqdef.eval import outcome_store

    _require_store(results, name)
    regime, path = _store_files(results, name)[0]
    size = outcome_store.read_info(path).get("patch_size")
    if regime == "matched":
        return f"[{size}×{size}, matched size] " if size else "[matched size] "
    return "[paper's size] "


def _table1(results):
    from triqdef.stages import motivation as M

    rate = lambda attack, model, bits: _store_rate(results, "table1", model=model, bits=bits, attack=attack)
    views = [(M.FP, 32), (M.QAT, 8), (M.QAT, 4), (M.QAT, 2)]
    lav = [rate(S.LAVAN, m, b) for m, b in views]
    gap = [rate(S.GAP, m, b) for m, b in views]
    kept = lav[3] / lav[0] if lav[0] > 0 else float("nan")
    ours = (f"{_store_size(results, 'table1')}LAVAN {_fmt(lav)} %, GAP {_fmt(gap)} % (32 FP white-box / 8 / 4 / 2)")
    verdict = "holds" if lav[0] >= 50 and kept >= 0.7 else ("partly" if kept >= 0.7 else "does not hold")
    return _decided(ours + f"; 2-bit keeps {100 * kept:.0f} % of the white-box LAVAN ASR",
                    _claims(results, "table1_transfer_asr"), verdict)


def _measures_with_info(results: Path, name: str) -> tuple[pd.DataFrame, dict]:
    """The measurement store ``results/outcomes/<name>.parquet`` (:mod:`triqdef.eval.measure_store`) and the info
    it was written with."""
    from triqdef.eval import measure_store

    path = results / "outcomes" / f"{name}.parquet"
    if not path.is_file():
        raise Missing(f"outcomes/{name}.parquet")
    return measure_store.read(path), measure_store.read_info(path)


def _measures(results: Path, name: str) -> tuple[pd.DataFrame, int]:
    """:func:`_measures_with_info`'s store and the bootstrap seed its stage used (its info's ``seed``, else 0)."""
    store, info = _measures_with_info(results, name)
    return store, int(info.get("seed", 0))


def _training_measures(results: Path, measure: str) -> tuple[pd.DataFrame, dict]:
    """Stage training's measurement store and info (:mod:`triqdef.stages.training_measures`); a store without
    ``measure`` counts as not measured (:class:`Missing`)."""
    store, info = _measures_with_info(results, "training_measures")
    if not (store["measure"] == measure).any():
        raise Missing(f"outcomes/training_measures.parquet: {measure}")
    return store, info


def _table3(results):
    """Claim 2 from the measurement store ``table3`` alone (:func:`triqdef.stages.motivation.table3_claim`)."""
    from triqdef.stages import motivation

    return motivation.table3_claim(*_measures(results, "table3"))


def _figure2(results):
    """Claim 3 from the measurement store ``figure2`` alone (:func:`triqdef.stages.motivation.figure2_claim`)."""
    from triqdef.stages import motivation

    return motivation.figure2_claim(*_measures(results, "figure2"))


def _table8(results):
    """Claim on Table 8, from its outcome store alone: LAVAN across architectures, on each target's QAT model."""
    from triqdef.eval import outcome_store

    _require_store(results, "table8")
    path = _store_files(results, "table8")[0][1]
    rows, lows = [], []
    for d in outcome_store.read_info(path).get("directions", []):
        rates = [_store_rate(results, "table8", model=f"{d['target']} QAT", bits=b, set=d["set"], attack=S.LAVAN)
                 for b in (32, 8, 4, 2)]
        if all(r != r for r in rates):   # no QAT model on that side (the white-box reference)
            continue
        rows.append(f"{d['source']}→{d['target']}: {_fmt(rates)}")
        lows.append(rates[-1])
    if not lows:
        raise Missing("outcomes/table8: a direction with a QAT model")
    return _decided(_store_size(results, "table8") + "LAVAN " + "; ".join(rows) + " % (32 / 8 / 4 / 2)",
                    _claims(results, "table8_cross_architecture"),
                    "holds" if min(lows) > 70 else "does not hold" if max(lows) < 35 else "partly")


def _table9(results):
    from triqdef.eval import outcome_store
    from triqdef.stages import motivation as M

    _require_store(results, "table9")
    path = _store_files(results, "table9")[0][1]
    sizes = outcome_store.read_info(path).get("set_sizes", {})
    frame = _store_indexed(path).frame
    low = M.lowest_bits(frame, M.PTQ)
    parts = [f"{sizes[n]}px {_store_rate(results, 'table9', model=M.PTQ, bits=low, set=n, attack=S.LAVAN):.1f} %"
             for n in sorted(sizes, key=lambda n: (sizes[n], n))]
    view = frame[(frame["model"] == M.PTQ) & (frame["bits"] == low)].drop_duplicates("image_id")
    right = int((view["clean_pred"] == view["label"]).sum())
    correct = f" (the PTQ {low}-bit model is right on {right} of {len(view)} test images, the only ones its rates count)"
    return _decided(_store_size(results, "table9") + f"CIFAR analogue, LAVAN on PTQ ResNet-20 at {low} bits: "
                    + ", ".join(parts) + correct, _claims(results, "table9_ptq_transfer_cifar"), "not decided")


def _table11(results):
    from triqdef.stages import motivation as M

    _require_store(results, "table11")
    attacks = sorted(_store_indexed(_store_files(results, "table11")[0][1]).frame["attack"].unique())
    parts = [f"{a.upper()} {_store_rate(results, 'table11', model=M.FP, attack=a):.1f} → "
             f"{_store_rate(results, 'table11', model=M.DYNAMIC, attack=a):.1f} %" for a in attacks]
    return _decided(", ".join(parts) + " (FP → dynamic 8-bit)", _claims(results, "table11_dynamic_quantization"),
                    "not decided")


# --------------------------------------------------------------------------- section 4


def _t5(results):
    """Table 5's rates, recomputed from its outcome store (:func:`_store_rates`)."""
    return _store_rates(results, "table5")


def _lavan_bits(t: pd.DataFrame, attack: str = S.LAVAN) -> list[str]:
    """The bit-width views (``"4-bit"``) of ``attack``'s columns in Table 5."""
    return [S.view_of(c) for c in S.attack_columns(t.columns, attack)]


#: The outcome stores already read (key "indexed", path, mtime) and evaluated ((name, path, mtime) -> (comparisons,
#: claims)) in this process.
_STORE_CACHE: dict[tuple, object] = {}
#: The comparison tables REPORT recomputes from an outcome store (issue 29, item 1), by the store's name.
STORE_OF = {"table5_comparisons": "table5", "table5_asr": "table5", "table7_comparisons": "table7",
            "table7_ablation": "table7", "table16_comparisons": "table16", "table14_comparisons": "table14",
            "table1_transfer_asr": "table1", "table9_ptq_transfer_cifar": "table9",
            "table11_dynamic_quantization": "table11", "table2_qat_vs_pbat": "table2",
            "table8_cross_architecture": "table8", "int8_runtime": "int8",
            "table6_preprocessing": "table6"}
#: Stores of a table made in one regime only (notebook 04, Table 11): ``<name>.parquet``, the regime in its info.
SINGLE_REGIME = ("table16", "table14", "table11", "int8", "table6", "clean", "stq")


def _store_files(results: Path, name: str) -> list[tuple[str, Path]]:
    """The (regime, path) of each store of ``name`` present, the matched regime first."""
    from triqdef.eval import outcome_store

    if name in SINGLE_REGIME:
        path = results / "outcomes" / f"{name}.parquet"
        if not path.is_file():
            return []
        return [("matched" if outcome_store.read_info(path).get("regime") == "matched" else "paper", path)]
    found = [(r, results / "outcomes" / (f"{name}_matched.parquet" if r == "matched" else f"{name}.parquet"))
             for r in ("matched", "paper")]
    # a regime the stage did not make is an empty store whose info says so
    return [(r, p) for r, p in found if p.is_file() and not outcome_store.read_info(p).get("absent")]


def _store_indexed(path: Path):
    """The store at ``path``, read and indexed once per process (:class:`triqdef.eval.defense_claims.Indexed`)."""
    from triqdef.eval import defense_claims, outcome_store

    key = ("indexed", str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _STORE_CACHE:
        _STORE_CACHE[key] = defense_claims.Indexed(outcome_store.read(path))
    return _STORE_CACHE[key]


def _store_evidence(results: Path, name: str, regime: str) -> tuple[pd.DataFrame, list[dict]] | None:
    """The comparisons and claims of store ``name`` (``table5``, ``table7``) in ``regime``, recomputed from the store
    alone with the same call the stage made (:func:`triqdef.eval.defense_claims.evaluate`,
    :func:`triqdef.stages.ablation_tables.comparisons`); None when that regime has no store. The bootstrap seed is
    the store's training seed, as in the stage."""
    from triqdef.eval import defense_claims, outcome_store
    from triqdef.stages import ablation_tables, appendix, motivation, training

    path = dict(_store_files(results, name)).get(regime)
    if path is None:
        return None
    key = (name, str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _STORE_CACHE:
        store = _store_indexed(path)
        seed = int(store.frame["seed"].min())
        recompute = {"table5": lambda: defense_claims.evaluate(store, seed=seed),
                     "table2": lambda: ([], training.table2_claims(store.frame, seed)),
                     "table8": lambda: ([], motivation.table8_claims(store.frame, outcome_store.read_info(path)
                                                                     .get("directions", []), seed)),
                     "table7": lambda: (ablation_tables.comparisons(store, seed), []),
                     "table16": lambda: (appendix.table16_comparisons(store, seed), []),
                     "table14": lambda: (appendix.table14_comparisons(store, seed), []),
                     "table1": lambda: ([], motivation.table1_claims(store.frame, seed)),
                     "table9": lambda: ([], motivation.table9_claims(store.frame, outcome_store.read_info(path)
                                                                     .get("set_sizes", {}), seed)),
                     "table11": lambda: ([], motivation.table11_claims(store.frame, seed))}
        _STORE_CACHE[key] = recompute[name]()
    return _STORE_CACHE[key]


def _require_store(results: Path, name: str) -> None:
    """A store's verdicts come from the store only: neither regime's file is a missing result."""
    if not _store_files(results, name):
        raise Missing(f"outcomes/{name}{'' if name in SINGLE_REGIME else '_matched'}.parquet")


def _store_rates(results: Path, name: str) -> pd.DataFrame:
    """A store's rate table in its verdicts' regime (the matched size when the stage made it), indexed by (model,
    group) (:func:`triqdef.eval.defense_claims.rate_table`); the regime's words in ``attrs["size"]``, the store's
    info in ``attrs["info"]``."""
    from triqdef.eval import defense_claims, outcome_store

    _require_store(results, name)
    path = _store_files(results, name)[0][1]
    t = defense_claims.rate_table(_store_indexed(path))
    t.attrs["size"] = _store_size(results, name)
    t.attrs["info"] = outcome_store.read_info(path)
    return t


def _comparisons(results, table: str, group: str, pairs, views=None, attack: str = S.LAVAN):
    """The rows of the paired comparisons (``<table>_matched``, then ``<table>``; docs/design.md#intervals-and-verdicts)
    for ``group``, ``attack``, ``pairs`` (and ``views``): yields ``(regime, rows)`` for each regime that has any.
    Those of :data:`STORE_OF` are recomputed from their outcome stores (:func:`_store_evidence`); the others are
    read from the tables a notebook saved."""
    store = STORE_OF.get(table)
    if store:
        _require_store(results, store)
    for regime, name in (("matched", f"{table}_matched"), ("paper", table)):
        if store:
            evidence = _store_evidence(results, store, regime)
            if evidence is None:
                continue
            c = evidence[0]
        else:
            try:
                c = _table(results, name)
            except Missing:
                continue
        if "verdict" not in c.columns:  # the regime was not made (its table says why)
            continue
        in_pairs = pd.Series([(m, a) in pairs for m, a in zip(c["model"], c["against"])], index=c.index)
        groups, attacks = ([g] if isinstance(g, str) else list(g) for g in (group, attack))
        keep = c["group"].isin(groups) & c["attack"].isin(attacks) & in_pairs
        if views is not None:
            keep &= c["view"].isin(list(views))
        if keep.any():
            for r in c[keep].itertuples():
                _record(regime, f"{r.group} {r.attack} {r.view}: {r.model} − {r.against}", r.difference, r.low, r.high,
                        "lower than 0", r.verdict, r.n_images, r.n_patches)
            yield regime, c[keep]


def _paired(results, table: str, group: str, pairs, views=None, attack: str = S.LAVAN) -> dict[str, tuple[str, str]]:
    """Verdicts from the paired-bootstrap comparisons (:func:`_comparisons`): {regime: (overall verdict of every
    selected comparison, text)}. A comparison claims that ``model`` is lower than ``against``; all must hold."""
    out = {}
    for regime, sel in _comparisons(results, table, group, pairs, views, attack):
        several = sel["group"].nunique() > 1 or sel["attack"].nunique() > 1
        text = "; ".join(f"{f'{r.group} {r.attack} ' if several else ''}{r.view} {r.model} − {r.against} "
                         f"{r.difference:+.1f} [{r.low:+.1f}, {r.high:+.1f}]" for r in sel.itertuples())
        images = sorted({int(n) for n in sel["n_images"]})
        span = f"{images[0]}" if len(images) == 1 else f"{images[0]}–{images[-1]} common"
        out[regime] = (_all_hold(sel.to_dict("records")), f"{regime} regime ({span} images, "
                                                          f"{int(sel['n_patches'].iloc[0])} patches, points, 95% paired CI): {text}")
    return out


def _paired_text(paired: dict[str, tuple[str, str]]) -> str:
    return " | ".join(text for _, text in paired.values())


def _paired_decision(paired: dict[str, tuple[str, str]]) -> str | None:
    """The verdict in the paper's regime of attack strength: the matched size when it was made, else 6×6."""
    for regime in ("matched", "paper"):
        if regime in paired:
            return paired[regime][0]
    return None


def _claim_sets(results, table: str, topic: str | None = None):
    """The claims a table's metadata keeps (key ``claims``: :func:`triqdef.eval.intervals.claim_evidence`, written by
    the notebook stage beside the table), ``<table>_matched`` first: yields ``(regime, claims)`` for each regime
    that has any (of ``topic``, when given)."""
    store = STORE_OF.get(table)
    if store:
        _require_store(results, store)
    for regime, name in (("matched", f"{table}_matched"), ("paper", table)):
        if store:   # recomputed from the outcome store, never read from the table
            evidence = _store_evidence(results, store, regime)
            saved = evidence[1] if evidence is not None else []
        else:
            path = results / "tables" / f"{name}.json"
            if not path.is_file():
                continue
            saved = json.loads(path.read_text()).get("claims") or []
        claims = [c for c in saved if topic is None or c.get("topic") == topic]
        if _recorded(claims, regime):
            yield regime, claims


def _all_hold(claims: list[dict]) -> str:
    """Claims that must all hold: decided familywise (Holm over their one-sided p-values,
    :func:`triqdef.eval.defense_claims.familywise`) where they carry them; else every one must hold (uncorrected,
    older tables)."""
    if claims and all(pd.notna(c.get("p_fails")) or c["verdict"] == AT_FLOOR for c in claims):
        return familywise(claims)
    return overall_verdict([c["verdict"] for c in claims])


def claim_text(evidence: dict) -> str:
    """:func:`triqdef.eval.intervals.claim_text`, without "1 patches" where the rate has no patches (an accuracy)."""
    evidence = dict(evidence, n_images=evidence.get("n_common", evidence.get("n_images", 0)))  # common images
    text = _interval_claim_text(evidence)
    return text.replace(" images, 1 patches)", " images)") if evidence.get("n_patches") == 1 else text


def _claims(results, table: str, topic: str | None = None, combine=_all_hold) -> dict[str, tuple[str, str]]:
    """{regime: (verdict, text)} from :func:`_claim_sets`: ``combine`` (default: every claim must hold) turns the
    regime's claims into one verdict; the text lists each interval with its sample and verdict."""
    return {regime: (combine(claims), f"{regime} regime: " + "; ".join(claim_text(c) for c in claims))
            for regime, claims in _claim_sets(results, table, topic)}


def _decided(ours: str, paired: dict[str, tuple[str, str]], fallback: str) -> tuple[str, str]:
    """``ours`` with the intervals behind the verdict, and the verdict in the paper's regime of attack strength
    (:func:`_paired_decision`); ``fallback`` (from point estimates) only when no claims were saved (an older run)."""
    decided = _paired_decision(paired)
    if decided is None:
        return ours + " (point estimates)", fallback
    return ours + ". 95% CI: " + _paired_text(paired), decided


def _unseen_reduction(results):
    t = _t5(results)
    parts, every, rels = [], True, []
    for b in _lavan_bits(t):
        col = S.attack_column(S.LAVAN, b)
        tq, pb, dw = (t.loc[(m, S.UNSEEN), col] for m in (S.TRIQDEF, S.PBAT, S.DWQ))
        every &= tq < pb and tq < dw
        rel = 100 * (1 - tq / pb) if pb > 0 else float("nan")
        rels.append(rel)
        parts.append(f"{b}: TriQDef {tq:.1f} vs PBAT {pb:.1f} ({rel:+.0f} % relative, {pb - tq:+.1f} points) vs DWQ {dw:.1f}")
    paired = _paired(results, "table5_comparisons", S.UNSEEN, {(S.TRIQDEF, S.PBAT), (S.TRIQDEF, S.DWQ)},
                     views=_lavan_bits(t))
    sized = _claims(results, "table5_asr", "unseen_reduction")
    ours = t.attrs["size"] + "LAVAN unseen ASR " + "; ".join(parts)
    if not paired:  # no comparisons saved (an older run): the point estimates
        verdict = "holds" if every and min(rels) > 40 else ("partly" if every else "does not hold")
        return ours + " (point estimates)", verdict
    if not sized:  # an older run: the direction from the intervals, the size from the point estimates
        decided = _paired_decision(paired)
        return ours + ". Paired: " + _paired_text(paired), "partly" if decided == HOLDS and min(rels) <= 40 else decided
    return _direction_and_size(ours, paired, sized)


def _direction_and_size(ours: str, direction: dict[str, tuple[str, str]], size: dict[str, tuple[str, str]]):
    """A claim of a direction ("TriQDef lower than PBAT and DWQ": ``direction``) and of its size ("by over 40 %":
    ``size``), both from intervals, in the paper's regime of attack strength: holds when both hold, "partly"
    when the direction holds and the size does not, does not hold when either does not (and the direction does not
    hold), *at the noise floor* when the size cannot be judged there, otherwise inconclusive."""
    merged = {r: (None, "; ".join(t for t in (direction.get(r, (None, ""))[1], size.get(r, (None, ""))[1]) if t))
              for r in ("matched", "paper") if r in direction or r in size}
    regime = next(iter(merged))
    d, z = direction.get(regime, (INCONCLUSIVE,))[0], size.get(regime, (INCONCLUSIVE,))[0]
    # a refuted size refutes the claim unless its direction holds ("partly"); the size is a relative claim, judged
    # only where both rates stand clearly above the noise baseline (AT_FLOOR otherwise)
    verdict = (FAILS if d == FAILS else "partly" if d == HOLDS and z == FAILS else FAILS if z == FAILS
               else AT_FLOOR if z == AT_FLOOR else HOLDS if d == HOLDS and z == HOLDS else INCONCLUSIVE)
    return ours + ". 95% CI: " + _paired_text(merged), verdict


def _seen_2bit(results):
    t = _t5(results)
    parts, ok = [], True
    two = S.bit_view(2)
    for attack in (S.LAVAN, S.GAP):
        col = S.attack_column(attack, two)
        if col not in t.columns:
            continue
        tq, pb, dw = (t.loc[(m, S.SEEN), col] for m in (S.TRIQDEF, S.PBAT, S.DWQ))
        rel_pb = 100 * (1 - tq / pb) if pb > 0 else float("nan")
        rel_dw = 100 * (1 - tq / dw) if dw > 0 else float("nan")
        ok &= rel_pb > 20 and rel_dw > 50
        parts.append(f"{attack.upper()} TriQDef {tq:.1f} vs PBAT {pb:.1f} ({rel_pb:+.0f} % rel.) vs DWQ {dw:.1f} ({rel_dw:+.0f} % rel.)")
    ours = t.attrs["size"] + "seen patches at 2 bits: " + "; ".join(parts)
    paired = _paired(results, "table5_comparisons", S.SEEN, {(S.TRIQDEF, S.PBAT), (S.TRIQDEF, S.DWQ)},
                     attack=(S.LAVAN, S.GAP), views=[two])   # one family over both attacks (Holm)
    sized = _claims(results, "table5_asr", "seen_lowest_bits")
    if not paired:  # no comparisons saved (an older run): the point estimates
        return ours + " (point estimates)", "holds" if ok else "does not hold"
    if not sized:
        decided = _paired_decision(paired)
        return ours + ". Paired: " + _paired_text(paired), ("partly" if decided == HOLDS and not ok else decided)
    return _direction_and_size(ours, paired, sized)


def _unseen_increase(results):
    t = _t5(results)
    parts, tq_inc, pb_inc = [], [], []
    for b in _lavan_bits(t, S.GAP):
        col = S.attack_column(S.GAP, b)
        tq = t.loc[(S.TRIQDEF, S.UNSEEN), col] - t.loc[(S.TRIQDEF, S.SEEN), col]
        pb = t.loc[(S.PBAT, S.UNSEEN), col] - t.loc[(S.PBAT, S.SEEN), col]
        tq_inc.append(tq)
        pb_inc.append(pb)
        parts.append(f"{b}: TriQDef {tq:+.1f}, PBAT {pb:+.1f}")
    ok = max(tq_inc) <= 3 and max(pb_inc) > 15
    return _decided(t.attrs["size"] + "GAP unseen minus seen ASR (points) " + "; ".join(parts),
                    _claims(results, "table5_asr", "unseen_rise", _marginal_rise_verdict),
                    "holds" if ok else "partly" if max(tq_inc) < max(pb_inc) else "does not hold")


def _marginal_rise_verdict(claims: list[dict]) -> str:
    """Section 4.3: TriQDef's rise stays below the margin at every bit-width (all its claims hold) and PBAT's
    exceeds its margin "often" (at least one bit-width)."""
    tq = _all_hold([c for c in claims if f" {S.TRIQDEF} " in c["statement"]])   # every bit-width: Holm
    pb = [c["verdict"] for c in claims if f" {S.PBAT} " in c["statement"]]
    if tq == FAILS or (pb and all(v == FAILS for v in pb)):
        return FAILS
    if tq == HOLDS and HOLDS in pb:
        return HOLDS
    return INCONCLUSIVE


def _whitebox(results):
    t = _t5(results)
    parts = []
    for b in _lavan_bits(t):
        col = S.attack_column(S.LAVAN, b)
        vals = {m: t.loc[(m, S.WHITEBOX), col] for m in (S.PBAT, S.DWQ, S.QADT_R, S.TRIQDEF) if (m, S.WHITEBOX) in t.index}
        parts.append(f"{b}: " + ", ".join(f"{m} {v:.1f}" for m, v in vals.items()))
    lowest = all(min(t.loc[(m, S.WHITEBOX), S.attack_column(S.LAVAN, b)] for m in (S.PBAT, S.DWQ))
                 > t.loc[(S.TRIQDEF, S.WHITEBOX), S.attack_column(S.LAVAN, b)] for b in _lavan_bits(t))
    return _decided(t.attrs["size"] + "white-box LAVAN ASR " + "; ".join(parts) + " (claim: TriQDef's is the lowest)",
                    _claims(results, "table5_asr", "whitebox"), "holds" if lowest else "does not hold")


def _patchattack(results):
    """§4.3: TriQDef resists the black-box PatchAttack: its ASR below PBAT's and DWQ's at every bit-width (each
    model queried itself; the same test images, the models' own patches)."""
    t = _t5(results)
    blackbox = "blackbox"
    if (S.TRIQDEF, blackbox) not in t.index:
        raise Missing("table5_asr_matched (PatchAttack rows)")
    # the bit-widths PatchAttack queried (patch_attack.bits): the others' columns are empty
    cols = [c for c in S.attack_columns(t.columns, S.PATCHATTACK) if pd.notna(t.loc[(S.TRIQDEF, blackbox), c])]
    if not cols:
        raise Missing("table5_asr_matched (PatchAttack rows)")
    parts = [f"{m} {_fmt(t.loc[(m, blackbox), c] for c in cols)}" for m in (S.TRIQDEF, S.PBAT, S.DWQ, S.QADT_R,
                                                                          S.STANDARD_QAT) if (m, blackbox) in t.index]
    q = t.attrs["info"].get("patchattack_queries") or {}
    ours = (t.attrs["size"] + "PatchAttack ASR (" + " / ".join(S.view_of(c) for c in cols) + "): " + "; ".join(parts)
            + (f"; {q.get('mean', 0):.0f} queries per patch (budget {q.get('budget')})" if q else ""))
    return _decided(ours, _claims(results, "table5_asr", "patchattack"), "not decided")


def _table2(results):
    """Claim 12 (Table 2), from its outcome store alone: PBAT's 8-bit ASR on the patches made at 2 bits against the
    seen ones of the same size."""
    _require_store(results, "table2")
    rate = lambda model, name: _store_rate(results, "table2", model=model, bits=8, set=name)
    seen, unseen, std = rate(S.PBAT, S.T2_SEEN_SAME_SIZE), rate(S.PBAT, S.T2_UNSEEN_2BIT), rate(S.STANDARD_QAT, S.T2_UNSEEN_2BIT)
    return _decided(f"{_store_size(results, 'table2')}PBAT 8-bit QAT: '{S.T2_SEEN_SAME_SIZE}' {seen:.1f} %, unseen (made "
                    f"at 2 bits) {unseen:.1f} % ({unseen - seen:+.1f} points); standard QAT on the latter {std:.1f} %",
                    _claims(results, "table2_qat_vs_pbat"), "holds" if unseen - seen > 20 else "does not hold")


#: Figure 3 / §4.6: "< 1 % clean deviation" from standard QAT at every bit-width (points).
GRADCAM_CLEAN_POINTS = -1.0


#: Figure 3 / §4.6: the b-bit Grad-CAM maps are "consistent" with the fp map: mean cosine above this at every b.
GRADCAM_COSINE_THRESHOLD = 0.8


def _gradcam(results):
    """Figure 3 / §4.6: TriQDef's Grad-CAM maps at 5/4/2 bits close to its fp map (mean cosine above
    :data:`GRADCAM_COSINE_THRESHOLD` at every bit-width, 95 % bootstrap intervals over test images from
    ``results/outcomes/training_measures.parquet``), and its clean accuracy within 1 point of standard QAT's at every
    bit-width, paired on the same test images from ``results/outcomes/clean.parquet`` (Holm over the bit-widths)."""
    from triqdef.stages import clean_outcomes
    from triqdef.stages import training_measures as TM

    measures, _ = _training_measures(results, TM.GRADCAM_COSINE)
    means, cam = TM.gradcam_claims(measures, GRADCAM_COSINE_THRESHOLD)
    _require_store(results, "clean")
    store = _store_indexed(_store_files(results, "clean")[0][1]).frame
    dev = _recorded(clean_outcomes.clean_claims(store, S.TRIQDEF, S.STANDARD_QAT, GRADCAM_CLEAN_POINTS,
                                                seed=int(store["seed"].min())))
    deviation = familywise(dev)
    n_cam = max(n for *_, n in means.values())
    ours = ("mean cosine of TriQDef Grad-CAM maps to its fp map: "
            + ", ".join(f"{v}-bit {m:.2f} [{lo:.2f}, {hi:.2f}]" for v, (m, lo, hi, _) in means.items())
            + f" ({n_cam} test images; claimed above {GRADCAM_COSINE_THRESHOLD:g} at every bit-width: {cam}); "
            + "clean deviation from QAT " + ", ".join(f"{c['bits']}bit {c['value']:+.1f}" for c in dev)
            + f" points (claimed above {GRADCAM_CLEAN_POINTS:g} at every bit-width, paired, Holm: {deviation})")
    if cam == HOLDS:
        return ours, "holds" if deviation == HOLDS else "partly"
    return ours, cam


def _table13(results):
    """Appendix C, Table 13: the default setting's robust accuracy under the seen LAVAN patches is higher than each
    sensitivity variant's, recomputed from Table 13's outcome store alone
    (:func:`triqdef.stages.ablation_tables.table13_claims`: paired over the same patches and images)."""
    from triqdef.eval import outcome_store
    from triqdef.stages import ablation_tables

    _require_store(results, "table13")
    regime, path = _store_files(results, "table13")[0]
    store = _store_indexed(path).frame
    variants = list(dict.fromkeys(store["model"]))
    if len(variants) < 2:  # the default alone: nothing to compare it with
        raise NotInProfile("no sensitivity variant in this profile's `ablations.run` (time budget): Table 13 has the "
                           "default setting only")
    bits = sorted(store["bits"].unique())
    rates = {v: 100 * sum(outcome_store.robust_outcomes(store, model=v, bits=int(b)).rate() for b in bits) / len(bits)
             for v in variants}
    claims = _recorded(ablation_tables.table13_claims(store, int(store["seed"].min())), regime)
    best = max(rates, key=rates.get)
    ours = (_store_size(results, "table13") + "mean robust accuracy under seen LAVAN: "
            + ", ".join(f"{v} {x:.1f}" for v, x in rates.items()) + " %")
    if not claims:   # no default row: the ranking of point estimates is all there is
        return ours + " (point estimates)", "holds" if best == "full" else "does not hold"
    return (ours + f". Paired, 95% CI studentised over (bit-width, patch), Holm over {len(claims)} variants: "
            + "; ".join(claim_text(c) for c in claims)), familywise(claims)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``correct / n`` (as ``scipy.stats.binomtest(...).proportion_ci(
    method="wilson")``, which the tests compare it with)."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return centre - half, centre + half


def _clean_cost(results):
    """Table 4 / §4.6: TriQDef's clean accuracy minus standard QAT's at every bit-width, claimed above
    :data:`~triqdef.stages.clean_outcomes.CLOSE_CLEAN_POINTS`, recomputed from ``results/outcomes/clean.parquet``
    alone (:func:`triqdef.stages.clean_outcomes.clean_claims`): paired on the same test images, decided familywise
    (Holm) over the bit-widths."""
    from triqdef.stages import clean_outcomes as stage

    _require_store(results, "clean")
    store = _store_indexed(_store_files(results, "clean")[0][1]).frame
    claims = _recorded(stage.clean_claims(store, S.TRIQDEF, S.STANDARD_QAT, seed=int(store["seed"].min())))
    text = ", ".join(f"{c['bits']}bit {c['value']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]" for c in claims)
    return (f"{text} points vs standard QAT ({claims[0]['n_images']} images, the same for both; 95 % paired bootstrap "
            f"interval; claimed higher than {stage.CLOSE_CLEAN_POINTS:g} at every bit-width, Holm over "
            f"{len(claims)})"), familywise(claims)


#: Appendix D, Table 17: TriQDef's step "~1.47×" QAT's time and "~1.17×" its memory; ours holds at most these.
BENCH_TIME_MAX, BENCH_MEMORY_MAX = 1.6, 1.25


def _bench(results):
    """Table 17: TriQDef's training step against multi-bit QAT's, from ``results/outcomes/training_measures.parquet``
    alone: the time ratio with its 95 % paired bootstrap interval over alternation rounds
    (:func:`triqdef.stages.training_measures.step_time_ratio`), the memory ratio (an exact count of the bytes saved
    for backward, no sampling) from its info. Holds when the interval's upper end is at most
    :data:`BENCH_TIME_MAX` and the memory ratio at most :data:`BENCH_MEMORY_MAX`."""
    from triqdef.stages import training_measures as TM

    store, info = _training_measures(results, TM.STEP_MS)
    r = TM.step_time_ratio(store, info, S.TRIQDEF, "QAT")
    mem = info["peak_mb"][S.TRIQDEF] / info["peak_mb"]["QAT"]
    ours = (f"time {r['value']:.2f}× [{r['low']:.2f}, {r['high']:.2f}] ({r['n_rounds']} alternating steps, GPDP on 1 in "
            f"{r['gpdp_every']}), memory {mem:.2f}× (saved-for-backward bytes) vs multi-bit QAT on {info['bench_device']}")
    if mem > BENCH_MEMORY_MAX or r["low"] > BENCH_TIME_MAX:
        return ours, "does not hold"
    return ours, "holds" if r["high"] <= BENCH_TIME_MAX else "inconclusive at this sample size"


def _table7(results):
    t = _store_rates(results, "table7")
    size = t.attrs["size"]
    col = S.attack_columns(t.columns, S.LAVAN)
    rows = {k: t.loc[(k, S.UNSEEN), col].mean() for k in (S.NO_FDP, S.NO_GPDP, S.FULL) if (k, S.UNSEEN) in t.index}
    ours = size + ", ".join(f"{k} {v:.1f}" for k, v in rows.items()) + " % (LAVAN unseen, mean over bit-widths)"
    paired = _paired(results, "table7_comparisons", S.UNSEEN, {(S.FULL, S.NO_FDP), (S.FULL, S.NO_GPDP)})
    decided = _paired_decision(paired)
    if decided is None:
        ok = rows.get(S.FULL, 1e9) < min(rows.get(S.NO_FDP, 0), rows.get(S.NO_GPDP, 0))
        return ours + " (point estimates)", "holds" if ok else "does not hold"
    return ours + ". Paired: " + _paired_text(paired), decided


def _table7_gpdp(results):
    t = _store_rates(results, "table7")
    size = t.attrs["size"]
    col = S.attack_columns(t.columns, S.LAVAN)
    inc = {g: (t.loc[(S.NO_GPDP, g), col] - t.loc[(S.FULL, g), col]) for g in (S.SEEN, S.UNSEEN)}
    ours = size + "; ".join(f"{g}: " + " / ".join(f"{v:+.1f}" for v in d) for g, d in inc.items()) + " points (w/o GPDP minus full)"
    over_10 = min(d.min() for d in inc.values()) > 10
    paired = _paired(results, "table7_comparisons", (S.SEEN, S.UNSEEN), {(S.FULL, S.NO_GPDP)})   # one family (Holm)
    decided = _paired_decision(paired)
    if decided is None:
        return ours + " (point estimates)", "holds" if over_10 else "does not hold"
    # the paired interval decides the direction (full lower than w/o GPDP); the paper's size (> 10 points) the rest
    return ours + ". Paired: " + _paired_text(paired), ("partly" if decided == "holds" and not over_10 else decided)


#: The speed settings "do not change the result" when the paired interval of full (speed settings on) minus
#: full without them lies inside +-SPEED_MARGIN points; an interval outside 0 says they do.
SPEED_MARGIN = 5.0


def _speed_settings(results):
    t = _store_rates(results, "table7")
    size = t.attrs["size"]
    slow = S.FULL_SLOW
    col = S.attack_columns(t.columns, S.LAVAN)
    if (slow, S.UNSEEN) not in t.index:
        raise NotInProfile("decided at the seed level in the replica group, not in the core (time budget): "
                           "[replicas/SEEDS.md](replicas/SEEDS.md#claim-18-triqdefs-speed-settings-seed-level), "
                           "TriQDef's three seeds against three of `every_step_full_res` (`seeds.variants`)")
    d = t.loc[(S.FULL, S.UNSEEN), col] - t.loc[(slow, S.UNSEEN), col]
    ours = size + "unseen LAVAN ASR, speed settings on minus off: " + " / ".join(f"{v:+.1f}" for v in d) + " points"
    for regime, sel in _comparisons(results, "table7_comparisons", S.UNSEEN, {(S.FULL, slow)}):
        inside = bool(((sel["low"] >= -SPEED_MARGIN) & (sel["high"] <= SPEED_MARGIN)).all())
        differs = bool(((sel["low"] > 0) | (sel["high"] < 0)).any())
        text = "; ".join(f"{r.view} {r.difference:+.1f} [{r.low:+.1f}, {r.high:+.1f}]" for r in sel.itertuples())
        decided = "does not hold" if differs else "holds" if inside else "inconclusive at this sample size"
        return (ours + f". Paired ({regime} regime, {int(sel['n_images'].iloc[0])} images, {int(sel['n_patches'].iloc[0])} "
                f"patches; 'no change' = 95% CI inside ±{SPEED_MARGIN:.0f} points): {text}"), decided
    return ours + " (point estimates)", "measured"


# --------------------------------------------------------------------------- QADT-R (the authors' earlier paper)

#: QADT-R's abstract: FP-made patches keep "over 70 %" ASR on QNNs at 2 bits.
QADT_R_TRANSFER = 70.0


def _qadt_r_transfer(results):
    """QADT-R's abstract: "over 70 % ASR even at 2-bit", read on our Table 1 (FP-made patches on standard QAT):
    decided on the 95 % interval of the 2-bit rate against 70 % (studentised over patches), both attacks, recomputed
    from Table 1's outcome store."""
    from triqdef.stages import motivation as M

    _require_store(results, "table1")
    regime, path = _store_files(results, "table1")[0]
    store = _store_indexed(path).frame
    low = M.lowest_bits(store, M.QAT)
    seed = int(store["seed"].min())
    claims = [M.level_claim(store, QADT_R_TRANSFER / 100, f"{a.upper()} ASR on standard QAT at {low} bits (%)", seed,
                            model=M.QAT, bits=low, attack=a) for a in sorted(store["attack"].unique())]
    _recorded(claims, regime)
    parts = [f"{c['statement'].split()[0]} {c['value']:.1f} [{c['low']:.1f}, {c['high']:.1f}] % (n {c['n_images']})"
             for c in claims]
    n_patches = max(c["n_patches"] for c in claims)
    return (_store_size(results, "table1") + f"FP-made patches on standard QAT at {low} bits: {'; '.join(parts)}, "
            f"{n_patches} patches per attack; 95% CI against 70 %"), _all_hold(claims)


def _qadt_r_vs_baselines(results):
    """QADT-R's abstract: its ASR is lower than PBAT's and DWQ's ("by up to 25 %"): every paired comparison of
    Table 5's seen and unseen LAVAN patches, QADT-R − PBAT and QADT-R − DWQ, must hold. "Up to" bounds the size
    from above, so only the direction is decided; the largest relative reduction is reported beside it."""
    t = _t5(results)
    if (S.QADT_R, S.UNSEEN) not in t.index:
        raise Missing("table5_asr (a QADT-R row)")
    parts, rels = [], []
    for b in _lavan_bits(t):
        col = S.attack_column(S.LAVAN, b)
        qr, pb, dw = (t.loc[(m, S.UNSEEN), col] for m in (S.QADT_R, S.PBAT, S.DWQ))
        rels += [100 * (1 - qr / o) for o in (pb, dw) if o > 0]
        parts.append(f"{b}: QADT-R {qr:.1f} vs PBAT {pb:.1f} vs DWQ {dw:.1f}")
    pairs = {(S.QADT_R, S.PBAT), (S.QADT_R, S.DWQ)}
    paired = _paired(results, "table5_comparisons", (S.SEEN, S.UNSEEN), pairs, views=_lavan_bits(t))  # one family
    ours = (t.attrs["size"] + "LAVAN unseen ASR " + "; ".join(parts)
            + (f"; largest relative reduction {max(rels):+.0f} %" if rels else ""))
    return _decided(ours, paired, "not decided")


def _qadt_r_pbat_unseen(results):
    """QADT-R's abstract: PBAT, effective on seen patches, fails on unseen ones. Read as PBAT's Table 5 ASR on the
    unseen sets above its seen-set ASR, every bit-width, both attacks (paired over images, the sets' own patches)."""
    t = _t5(results)
    parts = []
    for attack in (S.LAVAN, S.GAP):
        diffs = [t.loc[(S.PBAT, S.UNSEEN), S.attack_column(attack, b)] - t.loc[(S.PBAT, S.SEEN), S.attack_column(attack, b)]
                 for b in _lavan_bits(t, attack)]
        parts.append(f"{attack.upper()} {' / '.join(f'{d:+.1f}' for d in diffs)}")
    claims = {r: (_all_hold(cl), f"{r} regime: " + "; ".join(claim_text(c) for c in cl))
              for r, cl in _claim_sets(results, "table5_asr", "pbat_unseen")}
    return _decided(t.attrs["size"] + "PBAT unseen − seen ASR (points, " + " / ".join(_lavan_bits(t)) + "): "
                    + "; ".join(parts), claims, "not decided")


# --------------------------------------------------------------------------- appendix C, section 4.4 (notebook 04)


def _decided_claims(ours: str, claims: list[dict]) -> tuple[str, str]:
    if not claims:
        return ours + " (no intervals saved)", "not decided"
    return ours + ". 95% CI: " + "; ".join(claim_text(c) for c in claims), overall_verdict([c["verdict"] for c in claims])


def _table16(results):
    t = _store_rates(results, "table16")
    cols = S.attack_columns(t.columns, "dpr")
    parts = []
    for group in (S.SEEN, S.UNSEEN):
        vals = {m: _fmt(t.loc[(m, group), c] for c in cols) for m in (S.TRIQDEF, S.PBAT, S.DWQ) if (m, group) in t.index}
        parts.append(f"{group}: " + ", ".join(f"{m} {v}" for m, v in vals.items()))
    paired = _paired(results, "table16_comparisons", (S.SEEN, S.UNSEEN), {(S.TRIQDEF, S.PBAT), (S.TRIQDEF, S.DWQ)},
                     attack="dpr")   # one family over both sets, both baselines, every bit-width (Holm)
    return _decided(t.attrs["size"] + "DPR ASR (" + " / ".join(S.view_of(c) for c in cols) + ") " + "; ".join(parts),
                    paired, "not decided")


def _table6(results):
    """Section 4.4 (Table 6), from its outcome store alone: robust accuracy under the seen LAVAN patches, TriQDef
    against the preprocessing defenses (:func:`triqdef.stages.appendix.table6_claims`)."""
    from triqdef.eval import outcome_store
    from triqdef.stages import appendix

    _require_store(results, "table6")
    regime, path = _store_files(results, "table6")[0]
    store = _store_indexed(path).frame
    preprocessing = outcome_store.read_info(path).get("preprocessing", [])
    bits = sorted(int(b) for b in store["bits"].unique())[::-1]
    rate = lambda model, b: 100 * outcome_store.robust_outcomes(store, model=model, bits=b).rate()
    ours = (_store_size(results, "table6") + "robust accuracy under seen LAVAN (" + " / ".join(f"{b}-bit" for b in bits)
            + "): " + "; ".join(f"{m} {_fmt(rate(m, b) for b in bits)}" for m in [S.TRIQDEF, *preprocessing])
            + "; DiffPure not run (no pretrained model offline)")
    return _decided_claims(ours, _recorded(appendix.table6_claims(store, preprocessing, int(store["seed"].min())), regime))


def _table14(results):
    from triqdef.stages import appendix

    t = _store_rates(results, "table14")
    cols = S.attack_columns(t.columns, S.LAVAN)
    ours = t.attrs["size"] + "LAVAN ASR (" + " / ".join(S.view_of(c) for c in cols) + "): " + "; ".join(
        f"{model} " + " / ".join("—" if pd.isna(r[c]) else f"{r[c]:.1f}" for c in cols)
        for (model, _), r in t.iterrows())
    pair = appendix.table14_pair(_store_indexed(_store_files(results, "table14")[0][1]))
    text, verdict = _decided(ours, _paired(results, "table14_comparisons", S.SEEN, {pair}), "not decided")
    return text + " (TriQDef trained on ResNet-20 only in this profile)", ("partly measured: " + verdict
                                                                           if verdict != "not decided" else verdict)


# --------------------------------------------------------------------------- STQ (notebook 05)


def _stq_store(results) -> tuple[pd.DataFrame, list[dict], dict]:
    """The STQ rates, claims and memory footprints from ``results/outcomes/stq.parquet`` alone
    (:func:`triqdef.stages.stq.stq_claims`, as the stage computed them)."""
    from triqdef.eval import outcome_store
    from triqdef.stages import stq

    _require_store(results, "stq")
    path = _store_files(results, "stq")[0][1]
    store = _store_indexed(path).frame
    return stq.rates(store), stq.stq_claims(store, int(store["seed"].min())), outcome_store.read_info(path).get("memory_kb", {})


def _stq_clean(results):
    t, claims, kb = _stq_store(results)
    ours = (f"STQ {t.loc['STQ', 'clean']:.1f} % vs FP {t.loc['FP (tiny)', 'clean']:.1f} % clean; memory "
            f"{kb['STQ']:.0f} vs {kb['FP (tiny)']:.0f} KB")
    return _decided_claims(ours, _recorded([c for c in claims if c["statement"].startswith("clean accuracy")]))


def _stq_distillation(results):
    t, claims, _ = _stq_store(results)
    attacks = ("fgsm", "pgd", "cw")
    ours = "robust accuracy STQ-T50 vs STQ-T1: " + "; ".join(
        f"{a.upper()} {t.loc['STQ-T50', a]:.1f} vs {t.loc['STQ-T1', a]:.1f} %" for a in attacks)
    mine = _recorded([c for c in claims if "STQ-T50 − STQ-T1" in c["statement"]])
    ours, _ = _decided_claims(ours + f" (familywise: Holm over {len(mine)})", mine)
    return ours, familywise(mine)


def _stq_jacobian(results):
    """STQ's Jacobian claim from ``results/outcomes/stq_jacobian.parquet`` alone (a measurement store:
    :func:`triqdef.stages.stq.jacobian_summary`, as the stage computed it)."""
    from triqdef.stages import stq

    t, c = stq.jacobian_summary(*_measures(results, "stq_jacobian"))
    t = t.set_index(S.MODEL)
    ours = "mean ‖J‖_F²: " + ", ".join(f"{m} {t.loc[m, 'jacobian_fro_sq']:.3g}" for m in t.index)
    # not a rate: the interval is in the table's own units, not points
    return (ours + f". 95% CI of STQ − FP: {c['value']:+.3g} [{c['low']:+.3g}, {c['high']:+.3g}] "
                   f"({c['n_images']} images): {c['verdict']}"), c["verdict"]


def _deploy(results):
    """Table 18: the deployed TriQDef model is a plain QAT model of the same bit-width (same modules, parameters and
    buffers, no hook), from ``results/outcomes/training_measures.parquet`` alone (structure in its info); the
    latency ratio, from the per-run latencies, is shown beside it."""
    from triqdef.stages import training_measures as TM

    t = TM.latency_table(*_training_measures(results, TM.LATENCY_MS))
    same = bool(t[S.T18_SAME_STRUCTURE].all()) and int(t[S.T18_HOOKS].sum()) == 0
    return (f"same modules/parameters/buffers at every bit-width: {same}; latency ratio (median) "
            f"{t[S.T18_RATIO].min():.2f}–{t[S.T18_RATIO].max():.2f}"), ("holds" if same else "does not hold")


def _int8(results):
    """Issue 32: the patch ASRs measured on fake quantization hold on the int8 runtime: every paired difference
    int8 − fake within ±2 points (two one-sided claims per set), recomputed from ``results/outcomes/int8.parquet``
    alone (:func:`triqdef.stages.int8.int8_claims`)."""
    from triqdef.stages import int8 as stage

    _require_store(results, "int8")
    regime, path = _store_files(results, "int8")[0]
    store = _store_indexed(path).frame
    claims, rates = stage.int8_claims(store, int(store["seed"].min()))
    parts = []
    for model in dict.fromkeys(r["model"] for r in rates):
        mine = [r for r in rates if r["model"] == model]
        parts.append(f"{model} ASR int8 − fake " + ", ".join(
            f"{r['set'].replace('whitebox', 'white-box')} {100 * r['difference'].value:+.2f}" for r in mine) + " points")
    _recorded(claims, regime)
    return _store_size(results, "int8") + "; ".join(parts) + f" (familywise: Holm over {len(claims)} one-sided comparisons)", familywise(claims)


def _cross_bit(results):
    """Issue 30, item 1: TriQDef's mechanism, measured. Recomputed here from the outcome store of stage ``cross_bit``
    alone (``results/outcomes/cross_bit.parquet``): the transfer ratio r(s, t) = ASR(s → t) / ASR(s → s) of
    TriQDef against standard QAT and PBAT at every off-diagonal (s, t), decided by Holm over all of them."""
    from triqdef.eval import outcome_store
    from triqdef.eval.cross_bit import set_name
    from triqdef.eval.intervals import verdict as interval_verdict, Interval
    from triqdef.stages import cross_bit as stage

    path = results / "outcomes" / "cross_bit.parquet"
    if not path.is_file():
        raise Missing("outcomes/cross_bit.parquet")
    store = outcome_store.read(path)
    table, verdicts = stage.ratio_table(store)
    for r in table.itertuples():
        ci = Interval(r.difference, r.low, r.high, int(r.n_common_images), int(r.n_patches), 0, stage.N_BOOT, "t")
        _record("matched", f"transfer ratio × 100, TriQDef − {r.baseline}, {r.source_bits}→{r.target_bits} bits",
                100 * r.difference, 100 * r.low, 100 * r.high, "lower than 0",
                interval_verdict(ci, "lower") if pd.notna(r.difference) else INCONCLUSIVE, r.n_common_images, r.n_patches)
    sources = sorted({int(x.split("@")[1]) for x in store["set"].unique()}, reverse=True)
    white = "; ".join(f"{m} " + " / ".join(f"{100 * outcome_store.outcomes(store, model=m, set=set_name(s), bits=s).rate():.0f}"
                                           for s in sources) for m in (stage.MODEL, *stage.BASELINES))
    bits = "/".join(str(b) for b in sources)
    mean_ratio = {b: table.loc[table["baseline"] == b, ["ratio", "ratio_baseline"]].mean() for b in stage.BASELINES}
    first = stage.BASELINES[0]
    ratios = (f"mean transfer ratio TriQDef {mean_ratio[first]['ratio']:.2f}, "
              + ", ".join(f"{b} {mean_ratio[b]['ratio_baseline']:.2f}" for b in stage.BASELINES))
    n_patches = int(table["n_patches"].max()) if len(table) else 0
    ours = (f"white-box LAVAN ASR at {bits} bits (made and evaluated there): {white} %; {ratios} "
            f"({len(table)} paired comparisons, {n_patches} patches each; Holm: vs "
            + ", ".join(f"{b} {verdicts[b]}" for b in stage.BASELINES) + ")")
    return ours, verdicts["overall"]


CLAIMS = [
    Claim("§2, Table 1", "FP-made patches keep most of their success on QAT models down to 2 bits",
          "ResNet-20 LAVAN 87.2 / 83.7 / 77.3 / 74.2 %, GAP 84.7 / 59.6 / 58.5 / 50.3 % (32 / 8 / 4 / 2)", _table1,
          method="studentised"),
    Claim("§3.3, Table 3", "input gradients across bit-widths: low cosine, high HOG cosine",
          "cosine 0.05–0.25, HOG cosine 0.80–0.82 (no chance baseline given)", _table3,
          "Two unrelated 32×32 maps already have a HOG cosine of about 0.66 (our chance baseline)."),
    Claim("§3.2, Figure 2", "feature maps of different bit-widths stay perceptually aligned",
          "high Edge IoU / HOG similarity (heatmaps)", _figure2),
    Claim("App. A.1, Table 8", "patches transfer across architectures and bit-widths, above 70 % at 2 bits",
          "ResNet-20→ResNet-56 84.2 / 79.6 / 77.7 / 75.2 %", _table8),
    Claim("App. A.2, Table 9", "PTQ does not block transfer: over 50 % ASR at 2 bits",
          "ImageNet ResNet-18/34: 50.4–65.8 % at 2 bits", _table9,
          "Ours is a CIFAR analogue (ImageNet is out of reach offline). Each size has its own FP-made patches, as many "
          "as the seen set, with the same targets at every size (issue 29, item 4; docs/design.md#table-9-sets).",
          method="studentised"),
    Claim("App. A.4, Table 11", "dynamic quantization does not block transfer", "see Table 11", _table11,
          method="studentised"),
    Claim("Abstract, §1, §4.3", "TriQDef lowers ASR on unseen patches by over 40 %, and below PBAT and DWQ at every bit-width",
          "unseen LAVAN TriQDef 35.6 / 33.3 / 29.1 / 27.3 vs PBAT 77.2 / 73.7 / 67.8 / 65.3 %", _unseen_reduction,
          "'Over 40 %' is not said to be relative or in points; on the paper's Table 5 it holds both ways (41.6 points, 54 % relative at 32-bit).",
          method="studentised"),
    Claim("§4.2, Table 4; §4.6", "TriQDef keeps clean accuracy close to standard QAT",
          "Table 4: −0.0 / −1.8 / −2.3 / −2.4 points (32 / 5 / 4 / 2); §4.6 says '< 1 %'", _clean_cost,
          "§4.6's '< 1 %' contradicts the paper's own Table 4 (up to 2.4 points).", method="paired_accuracy"),
    Claim("App. D, Table 17", "TriQDef costs ~1.47× QAT time and ~1.17× memory", "1.47× / 1.17× (A100, ResNet-56, batch 256)", _bench,
          "§4.1 says batch 128; Table 17's footnote says 256."),
    Claim("§4.5, Table 7", "removing FDP or GPDP raises ASR; full TriQDef is lowest",
          "w/o FDP 65.2 / 61.1 / 59.7 / 55.9, w/o GPDP unseen 48.8 / …, full unseen 35.6 / …", _table7,
          "The paper's w/o-FDP seen and unseen rows are identical to the digit.",
          method="studentised"),
    Claim("§3.4, App. D, Table 18", "no inference-time overhead: a single forward with the deployed Q_b",
          "0 ms extra", _deploy),
    Claim("§2, Table 2", "PBAT fails on unseen patch bit-widths: ASR rises by more than 20 % on 2-bit patches",
          "PBAT QAT 10×10 seen 56.8 % vs 10×10 unseen (2-bit) 78.3 %", _table2,
          "Ours compares patches made on a standard-QAT model at 2 bits with FP-made patches of the same size (issue "
          "30, item 3; the sizes are in the table caption): Table 2's own set, one patch per seen patch with its "
          "target (issue 29, item 4; docs/design.md#table-2-set).", method="studentised"),
    Claim("§4.3, Table 5", "at 2 bits TriQDef lowers ASR by over 20 % against PBAT and over 50 % against DWQ",
          "seen LAVAN 2-bit: 26.2 vs PBAT 39.7 vs DWQ 76.4 %", _seen_2bit,
          "Read as relative; the paper's own Table 5 gives 34 % / 66 % relative (13.5 / 50.2 points).",
          method="studentised"),
    Claim("§4.3, Table 5", "on unseen patches TriQDef's ASR rises only marginally (+2.1 % under GAP), PBAT's often by over 15 %",
          "+2.1 % (text)", _unseen_increase,
          "The paper's Table 5 gives TriQDef GAP unseen minus seen +2.8 / +8.7 / +8.0 / +8.3 points, not +2.1.",
          method="studentised"),
    Claim("§4.3, Table 5", "TriQDef shows resilience against the black-box PatchAttack (lower ASR than PBAT and DWQ)",
          "PatchAttack columns of Table 5", _patchattack,
          "Ours: a texture dictionary from our FP model and a REINFORCE agent over (texture, location), queried "
          "against each model at each bit-width; each model's own patches, so the comparison pairs images only.",
          method="studentised"),
    Claim("docs/design.md#white-box-patches (not in the paper)", "white-box LAVAN optimised on each defended model over all its bit-widths",
          "—", _whitebox, "An adaptive attacker; the paper reports only transferred patches.",
          method="studentised"),
    Claim("§4.5, Table 7", "without GPDP, ASR increases by over 10 %", "w/o GPDP vs full: +10.8 / +11.5 / +11.0 / +11.4 (seen)",
          _table7_gpdp, "On the paper's unseen rows the increase is +13.2 / +13.6 / +14.6 / +14.5.",
          method="studentised"),
    Claim("App. D (speed)", "GPDP on a sub-batch, every n-th step, and maps at half resolution (ours) do not change the result",
          "appendix D downsamples maps by 2", _speed_settings, "Our addition: the cpu profile's speed settings against none.",
          method="studentised"),
    Claim("§4.6, Figure 3", "Grad-CAM maps of fp/5/4/2-bit TriQDef highlight the same regions; < 1 % clean deviation",
          "visual; '< 1 %'", _gradcam, "Ours: mean cosine between the fp and b-bit Grad-CAM maps (threshold 0.8), "
          "each on a 95 % percentile bootstrap interval over test images (docs/design.md#training-measures).",
          method="paired_accuracy"),
    Claim("App. C, Table 13", "(λ_FDP, λ_GPDP) = (0.8, 0.5), (α, β) = (0.5, 1.0) is the most balanced setting",
          "default Adv 54.86 / 52.0 / 53.2 / 52.7 % (λ rows)", _table13,
          "Table 13 lists the default twice with different numbers ((0.5, 1.0) Adv 50.0 … vs (0.8, 0.5) Adv 54.86 …), "
          "and its (1.0, 0.5) row equals its (0.8, 0.5) row to the digit.", method="studentised"),
    Claim("QADT-R (abstract)", "adversarial patches stay highly transferable to QNNs: over 70 % ASR at 2 bits",
          "over 70 % at 2 bits", _qadt_r_transfer, "Our Table 1 (FP-made patches on standard QAT at 2 bits).",
          method="studentised"),
    Claim("QADT-R (abstract)", "QADT-R lowers patch ASR against PBAT and DWQ (by up to 25 %)", "up to 25 % lower",
          _qadt_r_vs_baselines, "QADT-R as docs/design.md#qadt-r reads it (A-QAPA + DBWT + GIR), from the same checkpoint and steps "
          "as every defense; the direction is decided, 'up to' gives no lower bound to test.",
          method="studentised"),
    Claim("QADT-R (abstract)", "PBAT works on seen patches but fails to generalise to unseen ones",
          "PBAT fails under quantization shift", _qadt_r_pbat_unseen,
          "Read as PBAT's unseen-set ASR above its seen-set ASR (Table 5), every bit-width, both attacks.",
          method="studentised"),
    Claim("App. C.4, Table 16", "under DRP (deformable patches) TriQDef's ASR is below PBAT's and DWQ's, seen and unseen",
          "CIFAR-10 6×6: TriQDef 35.4 / 31.7 / 30.1 / 28.8 vs PBAT 56.6 / … vs DWQ 87.9 / … (32 / 5 / 4 / 2)", _table16,
          "Our DPR: the one patch optimiser's dpr recipe (texture and shape under an area budget).",
          method="studentised"),
    Claim("§4.4, Table 6", "TriQDef's robust accuracy exceeds the preprocessing defenses' (Jedi, DiffPure)",
          "ImageNet ResNet-50 32 / 2 bits: TriQDef 78.3 / 65.8, JEDI 64.3 / 23.4, DiffPure 41.7 / 19.6", _table6,
          "Ours: CIFAR-10, a Jedi-style entropy localisation + diffusion inpainting (no autoencoder); DiffPure needs a "
          "pretrained diffusion model and is not run."),
    Claim("App. C, Table 14", "TriQDef lowers LAVAN ASR on every architecture", "ResNet-20 87.2 → 30.2 % at 32 bits, "
          "VGG-16 / VGG-19 / AlexNet alike", _table14,
          "This profile trains TriQDef on ResNet-20 only; the second architecture has its no-defense row.",
          method="studentised"),
    Claim("STQ (summary)", "the tiny stochastic-ternary network is more accurate than its FP model, in a tenth of "
          "the memory", "80.57 % vs 75.20 % clean; 410 KB vs 4,496 KB", _stq_clean,
          "Ours: the summary's architecture as docs/design.md#stq reads it, trained for the profile's steps.",
          method="paired_accuracy"),
    Claim("STQ (summary)", "defensive distillation at T = 50 makes STQ more robust than at T = 1 under white-box attacks",
          "STQ-T50 above STQ-T1 (FGSM, PGD, C&W)", _stq_distillation,
          "White-box attacks against a T = 50 model meet small logit gradients (gradient masking, Carlini & Wagner "
          "2016); the black-box columns of the STQ table are the check.", method="paired_accuracy"),
    Claim("STQ (summary)", "quantization-aware ternary training regularises the input–logit Jacobian implicitly",
          "per-layer Jacobian regularisation from QAT", _stq_jacobian,
          "Measured through the straight-through estimator (what an attacker's gradient sees)."),
    Claim("§3.4, Table 18 (ours, issue 32)", "robustness measured on fake quantization holds on the int8 runtime",
          "'preserves integer-only deployment' (no integer runtime measured)", _int8,
          "Ours: the 8-bit view of every defended model and of Table 9's PTQ model on PyTorch's int8 kernels "
          "(triqdef.deploy); seen, unseen and white-box LAVAN ASR (white-box: 10 patches made on the fake-quantized "
          "view) within ±2 points of the fake-quantized view (paired on common images, studentised over patches).",
          method="studentised"),
    Claim("Title, §3 (issue 30)", "a patch made at one bit-width of TriQDef's shared backbone does not transfer to its other bit-widths",
          "the paper's mechanism (not measured there)", _cross_bit,
          "Ours: LAVAN patches made white-box on each defended model at each source bit-width, evaluated at every "
          "bit-width of the same model (stage cross_bit). Decided on the transfer ratio r(s, t) = ASR(s → t) / "
          "ASR(s → s), TriQDef against standard QAT and PBAT, paired on common images, Holm over every off-diagonal "
          "pair; recomputed from the outcome store results/outcomes/cross_bit.parquet.", method="studentised"),
    Claim("App. C, Table 15; Table 6 (ImageNet)", "ImageNet architectures and 50×50 patches", "Table 15", _out_of_scope,
          "Needs ImageNet and its pretrained models: not available offline here."),
]


#: The claims REPORT decides from outcome stores alone (issue 29, item 1): Table 5's and QADT-R's (``table5``),
#: Table 7's (``table7``), Tables 16 and 14 (``table16``, ``table14``), Tables 1, 9 and 11 and QADT-R's transfer
#: claim (``table1``, ``table9``, ``table11``), the cross-bit matrix (``cross_bit``), the clean accuracies (``clean``), STQ's
#: (``stq``, ``stq_jacobian``), Table 3 and Figure 2 (``table3``, ``figure2``), and Tables 17 and 18 and Figure 3's
#: measurements (``training_measures``). ``tools/report_from_stores.py`` checks, on real
#: pipeline outputs with every table deleted, that each of them reaches the same verdict.
FROM_STORES = (_table1, _table2, _table6, _table8, _table9, _int8, _table11, _qadt_r_transfer, _unseen_reduction, _seen_2bit, _unseen_increase, _patchattack, _whitebox, _qadt_r_vs_baselines,
               _qadt_r_pbat_unseen, _table7, _table7_gpdp, _speed_settings, _table16, _table14, _cross_bit, _clean_cost,
               _stq_clean, _stq_distillation, _stq_jacobian, _table3, _figure2, _bench, _deploy, _gradcam, _table13)


# --------------------------------------------------------------------------- pipeline time

#: docs/design.md#profiles. The from-scratch budgets in reference steps (:mod:`triqdef.eval.reference`, issue 31):
#: `cpu` 14,000 (150 min at the 641 ms the reference step took on a normal day), `smoke` 470 (5 min at 641 ms);
#: `gpu` stays 9 minutes on one GPU, whose reference step is another unit altogether.
BUDGET_REFERENCE_STEPS = {"smoke": 470, "cpu": 14_000}
BUDGET_MIN = {"gpu": 9}
SAME_SESSION_H = 6   # a reference measured further from a stage's run than this is from another session


def _stage_seconds(rec: dict) -> float | None:
    for key in ("stage_wall_time_s", "notebook_wall_time_s", "wall_time_s"):
        if isinstance(rec.get(key), (int, float)):
            return float(rec[key])
    return None


def _read_json(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _ended(details: dict, seconds: float) -> str:
    """When a stage's run ended (ISO 8601, UTC), '' if its metadata does not say.

    A stage's own metadata has ``created``, written as the stage ends. A notebook's has only its provenance's
    ``created``, taken when the notebook starts: its end is that plus the notebook's wall time ``seconds``.
    """
    if isinstance(when := details.get("created"), str):
        return when
    start = (details.get("provenance") or {}).get("created")
    if not isinstance(start, str):
        return ""
    try:
        began = _dt.datetime.fromisoformat(start)
    except ValueError:
        return ""
    return (began + _dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def stage_times(results: Path) -> pd.DataFrame:
    """One row per metrics file under ``results/metrics`` (a stage, or one run of the ``defense`` / ``ablations``
    stages) with the wall time it recorded (the stage's, the notebook's, or the training run's) and when the run
    ended (:func:`_ended`, '' if unknown).

    A skipped run's metrics say ``skipped``; why is in its metadata file
    (``results/metadata/<name>.json``, :func:`triqdef.meta.write_metrics`).
    """
    rows = []
    folder = results / "metrics"
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        if (rec := _read_json(path)) is None:
            continue
        stage = path.relative_to(folder).with_suffix("").as_posix()
        details = _read_json(results / "metadata" / path.relative_to(folder)) or {}
        if rec.get("skipped"):
            reason = details.get("reason", rec.get("reason", ""))
            rows.append({"stage": stage, "seconds": 0.0, "created": "", "note": "skipped: " + reason})
        elif (sec := _stage_seconds(rec)) is not None:
            rows.append({"stage": stage, "seconds": round(sec, 1), "created": _ended(details, sec), "note": ""})
    return pd.DataFrame(rows, columns=["stage", "seconds", "created", "note"])


def in_reference_steps(times: pd.DataFrame, log: list[dict]) -> pd.DataFrame:
    """``times`` (:func:`stage_times`) with each stage's seconds in reference steps: divided by the median of the
    reference measurements within :data:`triqdef.eval.reference.WINDOW_H` hours of the stage's end, or the nearest
    one when none is (:func:`triqdef.eval.reference.reference_near`; ``reference_ms``, ``gap_h`` to the nearest,
    ``reference_n`` measurements used; NaN without a time or a log)."""
    from triqdef.eval.reference import reference_near

    out = times.copy()
    ms, gap, n, timed = [], [], [], []
    for r in times.itertuples():
        ref = reference_near(log, r.created) if r.seconds > 0 else None
        ms.append(ref["median_ms"] if ref else float("nan"))
        gap.append(ref["gap_h"] if ref else float("nan"))
        n.append(ref["n"] if ref else 0)
        timed.append(bool(ref) and ref["timed"])   # a date alone: time of day not recorded
    out["reference_ms"], out["gap_h"], out["reference_n"], out["reference_timed"] = ms, gap, n, timed
    out["reference_steps"] = out["seconds"] * 1000 / out["reference_ms"]
    out.loc[out["seconds"] == 0, "reference_steps"] = 0.0
    return out


def _time_section(results: Path, profile: str) -> list[str]:
    from triqdef.eval.reference import read_log

    t = stage_times(results)
    if t.empty:
        return ["## Pipeline time", "", "(no stage has recorded its time yet)", ""]
    log = read_log(results / "bench" / "reference_log.jsonl")
    t = in_reference_steps(t, log)
    total_min = t["seconds"].sum() / 60
    converted = t["reference_steps"].notna()
    total_ref = t.loc[converted, "reference_steps"].sum()
    marked = (t["gap_h"] > SAME_SESSION_H) | (converted & ~t["reference_timed"] & (t["seconds"] > 0))
    far = int(marked.sum())
    lines = ["## Pipeline time", "",
             "Wall time each stage recorded in `results/metrics` (the process's own clock: interpreter start-up and "
             "DVC's bookkeeping, a few seconds a stage, are not counted), and the same in *reference steps*: divided "
             "by the median time of one joint 5-bit-width QAT step (ResNet-20, batch 128) measured on the same machine: "
             "the median of the measurements within 2 h of the stage's end, so that one slowed by another job does "
             "not set it alone, else the nearest one (`triqdef bench reference`, `results/bench/reference_log.jsonl`; "
             "[design](../docs/design.md#budgets-in-machine-units)). The machines' speed varies about 2.5× from one "
             "session to the next, so minutes alone decide nothing.", ""]
    summary = f"Total **{total_min:.1f} min**"
    if converted.all():
        summary += f" = **{total_ref:,.0f} reference steps**"
    elif converted[t["seconds"] > 0].any():
        summary += f"; {total_ref:,.0f} reference steps over the {int(converted.sum())} stages with a reference"
    else:
        summary += "; no reference measured, so no total in reference steps"
    if profile in BUDGET_REFERENCE_STEPS:
        budget = BUDGET_REFERENCE_STEPS[profile]
        if converted.all():
            verdict = "within" if total_ref <= budget else "over"
            summary += f". Budget of the `{profile}` profile: {budget:,} reference steps: **{verdict}**"
            if far:
                summary += (f" (approximate: {far} stage(s) converted with a reference measured more than "
                            f"{SAME_SESSION_H} h from their run, or on their day at a time not recorded, marked †)")
        else:
            summary += f". Budget of the `{profile}` profile: {budget:,} reference steps: **not checkable** here"
    elif profile in BUDGET_MIN:
        summary += (f". Budget of the `{profile}` profile: {BUDGET_MIN[profile]} min: "
                    f"**{'within' if total_min <= BUDGET_MIN[profile] else 'over'}**")
    lines += [summary + ".", "", "| stage | run ended (UTC) | seconds | reference step (ms) | measurements | "
                                 "reference steps | note |", "|---|---|---|---|---|---|---|"]
    for r, mark in zip(t.itertuples(), marked):
        ref = "" if r.reference_ms != r.reference_ms else f"{r.reference_ms:,.0f}{' †' if mark else ''}"
        steps = "" if r.reference_steps != r.reference_steps else f"{r.reference_steps:,.0f}"
        note = r.note or ("" if not mark else f"reference {r.gap_h / 24:.1f} days from the run"
                          if r.gap_h > SAME_SESSION_H else "reference of that day, time not recorded")
        n = f"{r.reference_n}" if r.reference_n else ""
        lines.append(f"| {r.stage} | {r.created[:16].replace('T', ' ')} | {r.seconds:.0f} | {ref} | {n} | {steps} | {note} |")
    return lines + [""]


CELL = 160   # the longest cell of REPORT's first table (issue 29, item 8)
FOREST = "claims_forest"
SEEDS_NOTE = ("one training seed: the intervals cover test images and patches, not training runs (a retrained model "
              "may land elsewhere; the training-seed replicas of standard QAT, PBAT and TriQDef, with seed-level "
              "intervals, are in [replicas/SEEDS.md](replicas/SEEDS.md), a group of stages apart from the core)")
METHOD_NOTE = ("95 % percentile bootstrap over test images and patches, as the notebook stages computed them; the "
               "coverage simulation finds it short of 95 % below 10 patches, so fewer patches decide nothing "
               "([design](../docs/design.md#interval-coverage))")


STUDENTISED_NOTE = ("95 % studentised bootstrap interval over patches (t quantile, P − 1 degrees of freedom), each "
                    "difference paired on the images eligible for every side; the coverage simulation supports it from 10 "
                    "patches ([design](../docs/design.md#interval-coverage))")


PAIRED_ACCURACY_NOTE = ("95 % percentile bootstrap over test images, both models' predictions on the same images drawn "
                        "together in every replicate (an accuracy has no patch level); one-sided p-values from the "
                        "replicates' standard error feed Holm's procedure over the bit-widths "
                        "([design](../docs/design.md#clean-outcomes))")


METHOD_NOTES = {"percentile": METHOD_NOTE, "studentised": STUDENTISED_NOTE, "paired_accuracy": PAIRED_ACCURACY_NOTE}


def _short(text: str, limit: int = CELL) -> str:
    """``text`` on one line, cut at a word before ``limit`` characters (with "…")."""
    text = " ".join(str(text).split()).replace("|", "/")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.6 else cut).rstrip(" ,;:(") + "…"


def _headline(ours: str) -> str:
    """Our figure without the intervals listed after it (they are in the claim's section)."""
    for sep in (". 95% CI:", " 95% CI:", " (point estimates)"):
        ours = ours.split(sep)[0]
    return ours


def _deciding(read: list[dict]) -> list[dict]:
    """The intervals of the regime a verdict rests on: the matched size when the claim read it, else the paper's."""
    for regime in ("matched", "paper"):
        rows = [e for e in read if e["regime"] == regime]
        if rows:
            return rows
    return []


def _too_few(e: dict) -> bool:
    return 1 < e["n_patches"] < MIN_PATCHES


def patch_floor(verdict: str, deciding: list[dict]) -> str:
    """``verdict``, or *too few patches to decide* where it rests on an interval over fewer than
    :data:`~triqdef.eval.intervals.MIN_PATCHES` patches (no interval method reaches its coverage there:
    docs/design.md#interval-coverage). A *does not hold* stands when an interval over enough patches fails."""
    if verdict not in (HOLDS, FAILS, INCONCLUSIVE) or not any(_too_few(e) for e in deciding):
        return verdict
    if verdict == FAILS and any(e["verdict"] == FAILS and not _too_few(e) for e in deciding):
        return FAILS
    return TOO_FEW


@dataclass
class Row:
    """One evaluated claim: its number, the claim, our figure, the verdict and the intervals it read."""

    number: int
    claim: Claim
    ours: str
    verdict: str
    read: list[dict]


def evaluate_claims(results: Path) -> list[Row]:
    """Every claim of :data:`CLAIMS` evaluated on ``results``, with the intervals it read and the patch floor
    applied to its verdict."""
    rows = []
    for number, c in enumerate(CLAIMS, 1):
        token = _READ.set([])
        try:
            ours, verdict = c.evaluate(results)
        except Missing as exc:
            ours, verdict = f"(result `{exc}` not produced yet)", "not measured"
        except NotInProfile as exc:
            ours, verdict = f"(not run in this profile: {exc})", "not measured"
        except OutOfScope as exc:
            ours, verdict = f"({exc})", "not reproduced"
        except (KeyError, IndexError) as exc:
            ours, verdict = f"(result incomplete: {exc})", "not measured"
        finally:
            read = _READ.get()
            _READ.reset(token)
        rows.append(Row(number, c, ours, patch_floor(verdict, _deciding(read)), read))
    return rows


def _sample(deciding: list[dict]) -> str:
    if not deciding:
        return ""
    imgs = sorted({e["n_images"] for e in deciding})
    pats = sorted({e["n_patches"] for e in deciding if e["n_patches"] > 1})
    span = lambda v: f"{v[0]:,}" if len(v) == 1 else f"{v[0]:,}–{v[-1]:,}"
    return f"{span(imgs)} images" + (f", {span(pats)} patches" if pats else "") + ", one training seed"


#: An interval's own ``method`` (:class:`triqdef.eval.intervals.Interval`) -> its note in :data:`METHOD_NOTES`.
INTERVAL_METHODS = {"t": "studentised", "percentile": "percentile"}


def _method(row: Row) -> str:
    """The key of the "Method" note of a claim's section: the method of the deciding intervals when each says and
    they agree (a patch rate's: studentised or percentile), else the one the claim declares."""
    said = {INTERVAL_METHODS.get(e.get("method")) for e in _deciding(row.read)}
    return said.pop() if len(said) == 1 and None not in said else row.claim.method


def _section(row: Row, profile: str) -> list[str]:
    c, deciding = row.claim, _deciding(row.read)
    lines = [f'<a id="claim-{row.number}"></a>', "", f"### {row.number}. {c.where}: {c.claim}", "",
             f"**Verdict: {row.verdict}** (profile `{profile}`" + (f"; {_sample(deciding)}" if deciding else "") + ")", "",
             f"- Paper: {c.paper}", f"- Ours: {_headline(row.ours) if row.read else row.ours}"]
    if c.note:
        lines.append(f"- Note: {c.note}")
    if row.read:
        lines.append(f"- Method: {METHOD_NOTES[_method(row)]}; {SEEDS_NOTE}.")
        for regime in ("matched", "paper"):
            entries = [e for e in row.read if e["regime"] == regime]
            if not entries:
                continue
            decides = " (decides)" if entries == deciding else ""
            # the regime is a patch size: a claim without patches (an accuracy, a measurement) has none
            where = f", {regime} regime" if any(e["n_patches"] > 1 for e in row.read) else ""
            lines.append(f"- Intervals{where}{decides}:")
            for e in entries:
                flag = f" — fewer than {MIN_PATCHES} patches: {TOO_FEW}" if _too_few(e) else ""
                lines.append(f"  - {e['statement']}: {e['value']:+.1f} [{e['low']:+.1f}, {e['high']:+.1f}] (claimed "
                             f"{e['direction']} than {e['margin']:g}; {e['n_images']} images"
                             + (f", {e['n_patches']} patches" if e["n_patches"] > 1 else "") + f"): {e['verdict']}{flag}")
    return lines + [""]


def forest_evidence(rows: list[Row]) -> list[Evidence]:
    """The deciding intervals of every claim, for the forest plot (verdicts with the patch floor)."""
    out = []
    for row in rows:
        for e in _deciding(row.read):
            verdict = TOO_FEW if _too_few(e) else e["verdict"]
            out.append(Evidence(row.number, e["statement"], e["value"], e["low"], e["high"], e["direction"], e["margin"],
                                verdict, e["n_images"], e["n_patches"], e["regime"]))
    return out


def build_report(results: Path | None = None, cfg=None, rows: list[Row] | None = None) -> str:
    """REPORT.md's text; ``cfg`` (a :class:`triqdef.config.Config`) names the profile and commit in its header.
    The first screen is one line per claim (no cell over :data:`CELL` characters) under the forest plot; each
    claim's section below has the full figures, every interval it read, the sample and the method."""
    results = results or paths.results_dir()
    rows = rows if rows is not None else evaluate_claims(results)
    lines = ["# TriQDef reproduction report", "",
             "Every claim of the paper (abstract, sections 2–4, appendices A, C, D) beside our figure. Generated by "
             "`triqdef report` (DVC stage `report`) from `results/tables` and `results/metrics`; nothing typed in by hand "
             "except the paper's numbers.", ""]
    profile = cfg.base.profile if cfg is not None else "?"
    if cfg is not None:
        prov = provenance(cfg)
        lines += [f"Profile `{prov.get('profile')}`, commit `{prov.get('commit')}`, data `{data_source_of(results)}`; "
                  f"{SEEDS_NOTE}.", ""]
    if (results / "figures" / f"{FOREST}.png").is_file():
        lines += [f"![Each claim's deciding intervals against its threshold](figures/{FOREST}.png)", "",
                  "*Each claim's deciding intervals (95 %), drawn as the distance to the claim's own threshold with "
                  "the claimed side to the right: wholly right of the line, the claim holds there; wholly left, it does "
                  "not. Claims decided on intervals in other units than points (Table 3, Figure 2, STQ's Jacobian) or without one (Tables 17, 18, Grad-CAM) are in "
                  "the table only.*", ""]
    lines += ["| # | where | claim | paper | ours | verdict |", "|---|---|---|---|---|---|"]
    for row in rows:
        c = row.claim
        lines.append(f"| [{row.number}](#claim-{row.number}) | {_short(c.where, 60)} | {_short(c.claim)} | "
                     f"{_short(c.paper)} | {_short(_headline(row.ours))} | **{row.verdict}** |")
    lines += ["", "## Claims in detail", ""]
    for row in rows:
        lines += _section(row, profile)
    lines += _time_section(results, profile)
    return "\n".join(lines) + "\n"


def data_source_of(results: Path) -> str:
    """The data source the results under ``results`` were computed from (``results/data/splits.json``)."""
    rec = _read_json(results / "data" / "splits.json") or {}
    return rec.get("source", "?")


def write_report(cfg=None) -> Path:
    """``results/REPORT.md`` and its forest plot ``results/figures/claims_forest.png``."""
    from triqdef.reporting.forest import forest
    from triqdef.reporting.tables import save_figure

    results = paths.results_dir()
    rows = evaluate_claims(results)
    evidence = forest_evidence(rows)
    if evidence:
        save_figure(forest(evidence, {r.number: r.claim.claim for r in rows}), FOREST, results / "figures", dpi=110)
    return write_text(results / "REPORT.md", build_report(results, cfg, rows))
