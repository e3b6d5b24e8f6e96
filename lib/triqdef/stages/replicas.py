"""The replica group's shared part: one run's headline rates from its outcome store, the seed spread and
seed-level comparison tables, the training-length table and figure, and the replica stages' times (issue 30,
items 5 and 7; issue 29, item 6; docs/design.md#training-seeds, #training-length).

Two stages use it, so that the seed level does not wait for the training-length runs:
:mod:`triqdef.stages.seed_summary` (``results/replicas/SEEDS.md``) and :mod:`triqdef.stages.length_summary`
(``results/replicas/LENGTH.md``).

Every run is the core run of a method (stage ``defense``, training seed ``base.seed``, evaluated by stages
``training`` (Table 5's store) and ``cross_bit``) or a replica (stages ``defense_seed`` / ``defense_length``,
evaluated the same way by ``seed_eval`` / ``length_eval``). Its headline rates:

- clean accuracy at each of ``robustness.bits`` (all test images; 95 % Wilson interval);
- the unseen ASR: targeted ASR of the five unseen LAVAN sets together (Table 5's rows, the deciding regime);
- the white-box ASR at each ``cross_bit.source_bits`` (patches made on the run's own model at that bit-width);
- the transfer ratio r(s, t) = ASR(s → t) / ASR(s → s) at every off-diagonal pair.

No core stage and not REPORT.md depend on the replica group.
"""

from __future__ import annotations

import functools
import json
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from triqdef import paths
from triqdef.errors import TriqdefError

#: The replica groups: results/replicas/{models,metadata,metrics,plots,outcomes}/<group>/ (``variants``: TriQDef's
#: ``seeds.variants`` with every seed, stages ``variant_seed`` and ``variant_eval``).
GROUPS = ("seeds", "variants", "length")
#: Each replica stage's budget (issue 30): 5,600 reference steps.
REPLICA_BUDGET_STEPS = 5_600
N_BOOT = 2000
#: The rates of every run, in table order, and their units.
CLEAN, UNSEEN, WHITEBOX, RATIO = "clean accuracy (%)", "unseen ASR (%)", "white-box ASR (%)", "transfer ratio"
#: The comparisons of seed_comparisons: the claim's model against each baseline, on rates where lower is better.
MODEL, BASELINES = "triqdef", ("qat", "pbat")


@dataclass
class Run:
    """One trained model of a method: the core run (``factor`` 1, ``training_seed`` base.seed) or a replica."""

    method: str
    label: str                  # its outcome-store model name (schemas.DEFENSE_LABELS)
    training_seed: int
    factor: float               # × the core run's steps
    steps: int
    accuracy: dict[int, float]  # bit-width -> clean test accuracy (fraction)
    n_test: int
    store: pd.DataFrame = field(repr=False)


def _json(path: Path, stage: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TriqdefError(f"metrics {path} not found: expected the output of stage {stage}") from None
    except ValueError:
        raise TriqdefError(f"metrics {path} is not valid JSON: expected the output of stage {stage}") from None


def _run(method: str, metrics_path: Path, store: pd.DataFrame, training_seed: int, factor: float, stage: str) -> Run:
    from triqdef.reporting import schemas as S

    m = _json(metrics_path, stage)
    acc = {int(k.removeprefix("acc_").removesuffix("bit")): float(v) for k, v in m.items() if k.startswith("acc_")}
    label = S.DEFENSE_LABELS[method]
    return Run(method, label, training_seed, factor, int(m["steps"]), acc, int(m["n_test"]),
               store[store["model"] == label])


def core_run(cfg, method: str, results: Path | None = None) -> Run:
    """``method``'s core run: stage ``defense``'s metrics, Table 5's store (deciding regime) and ``cross_bit``'s."""
    results = results or paths.results_dir()
    return _run(method, results / "metrics" / "defenses" / f"{method}.json", _core_store(results), cfg.base.seed, 1.0,
                f"defense@{method}")


@functools.lru_cache(maxsize=2)
def _core_store(results: Path) -> pd.DataFrame:
    """Table 5's outcome store of the deciding regime (matched size when the patch stage made it) and cross_bit's."""
    from triqdef.eval import outcome_store

    stores = []
    for name, stage in (("table5_matched", "training"), ("table5", "training"), ("cross_bit", "cross_bit")):
        path = results / "outcomes" / f"{name}.parquet"
        if name == "table5" and stores:   # the matched store decides when the patch stage made it
            continue
        if path.is_file() and not (store := outcome_store.read(path)).empty:
            stores.append(store)
        elif name != "table5_matched":   # (an absent regime's store is empty)
            raise TriqdefError(f"outcome store {path} not found: expected the output of stage {stage}")
    return pd.concat(stores, ignore_index=True)


def replica_run(cfg, method: str, training_seed: int | None = None, factor: float | None = None,
                variant: str | None = None) -> Run:
    """A replica: its training metrics (stage ``defense_seed`` / ``variant_seed`` / ``defense_length``) and its
    evaluation's store. A variant's run is named ``<method>-<variant>`` (its own row in every table)."""
    from triqdef.eval import outcome_store
    from triqdef.stages import defense, replica_eval

    group, run = defense.run_folder(variant, training_seed, factor), defense.run_name(method, variant, training_seed, factor)
    if variant is not None:
        item, evaluation, training = f"{variant}-{training_seed}", "variant_eval", "variant_seed"
    elif factor is None:
        item, evaluation, training = f"{method}-{training_seed}", "seed_eval", "defense_seed"
    else:
        item, evaluation, training = f"{method}-{factor:g}", "length_eval", "defense_length"
    path = replica_eval.store_path(group, run)
    if not path.is_file():
        raise TriqdefError(f"outcome store {path} not found: expected the output of stage {evaluation}@{item}")
    out = _run(method, paths.replicas_dir() / "metrics" / group / f"{run}.json", outcome_store.read(path),
               cfg.base.seed if training_seed is None else training_seed, 1.0 if factor is None else factor,
               f"{training}@{item}")
    return out if variant is None else dataclasses.replace(out, method=f"{method}-{variant}")


def run_rates(run: Run, eval_bits, source_bits, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Every headline rate of ``run``: one row per (rate, where) with the value, its interval (``"t"`` over
    patches as the tables; Wilson for accuracy), the bootstrap se, the sample, and the replicates (column
    ``replicates``, for the seed level). ASRs in %, ratios as ratios."""
    from triqdef.eval import cross_bit, intervals, outcome_store, robustness, seed_level
    from triqdef.eval.outcome_store import NoCommonImages
    from triqdef.reporting.report import wilson_interval
    from triqdef.stages.cross_bit import off_diagonal

    rows = []

    def add(rate, where, value, low, high, reps, n_images, n_patches, scale):
        se = float(np.nanstd(reps, ddof=1)) if np.isfinite(reps).sum() > 1 else float("nan")
        rows.append({"method": run.method, "training_seed": run.training_seed, "factor": run.factor,
                     "steps": run.steps, "rate": rate, "where": where, "value": scale * value, "low": scale * low,
                     "high": scale * high, "se": scale * se, "n_images": n_images, "n_patches": n_patches,
                     "replicates": scale * np.asarray(reps, dtype=float)})

    rng = np.random.default_rng([seed, run.training_seed, 97])
    for b in eval_bits:
        if b in run.accuracy:
            p, n = run.accuracy[b], run.n_test
            low, high = wilson_interval(round(p * n), n)
            add(CLEAN, f"{b}-bit", p, low, high, rng.binomial(n, p, n_boot) / n, n, 1, 100)
    for b in eval_bits:
        o = outcome_store.outcomes(run.store, model=run.label, attack="lavan", set=list(robustness.UNSEEN_SETS), bits=b)
        ci = intervals.bootstrap_rate(o, n_boot, seed, "t")
        add(UNSEEN, f"{b}-bit", ci.value, ci.low, ci.high, seed_level.rate_replicates(o, n_boot, seed), o.n_images,
            o.n_patches, 100)
    for s in source_bits:
        o = outcome_store.outcomes(run.store, model=run.label, set=cross_bit.set_name(s), bits=s)
        ci = intervals.bootstrap_rate(o, n_boot, seed, "t")
        add(WHITEBOX, f"{s}-bit", ci.value, ci.low, ci.high, seed_level.rate_replicates(o, n_boot, seed), o.n_images,
            o.n_patches, 100)
    targets = sorted(run.store.loc[run.store["set"].str.startswith("cross_bit@"), "bits"].unique(), reverse=True)
    for s, t in off_diagonal(source_bits, targets):
        try:
            value, reps, off = cross_bit.ratio_replicates(run.store, run.label, s, t, n_boot, seed)
        except NoCommonImages:   # (tiny smoke models) no image eligible at both bit-widths
            add(RATIO, f"{s}→{t}", float("nan"), float("nan"), float("nan"), np.full(n_boot, np.nan), 0, 0, 1)
            continue
        ci = intervals.interval_from(value, reps, off, n_boot, "t")
        add(RATIO, f"{s}→{t}", ci.value, ci.low, ci.high, reps, off.n_images, off.n_patches, 1)
    return pd.DataFrame(rows)


def seed_spread(rates: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per (method, rate, where) over the training seeds of ``rates`` (factor 1): each seed's value, the
    seed mean with its seed-level interval, the seed-to-seed sd, the runs' mean sampling se, and which dominates."""
    from triqdef.eval import seed_level

    out = []
    keys = ["method", "rate", "where"]
    for (method, rate, where), g in rates.groupby(keys, sort=False):
        g = g.sort_values("training_seed")
        finite = g[np.isfinite(g["value"])]
        row = {"method": method, "rate": rate, "where": where, "seeds": len(g)}
        row.update({f"seed {int(s)}": v for s, v in zip(g["training_seed"], g["value"])})
        if finite.empty:
            out.append(row)
            continue
        ci = seed_level.seed_level_interval(list(finite["value"]), list(finite["replicates"]), n_boot, seed)
        sp = seed_level.spread(finite["value"], finite["se"])
        row.update({"mean": ci.value, "mean low": ci.low, "mean high": ci.high, "sd (seeds)": sp["sd_seeds"],
                    "range": sp["max"] - sp["min"], "se (sampling)": sp["se_sampling"],
                    "dominates": seed_level.dominant(sp["sd_seeds"], sp["se_sampling"])})
        out.append(row)
    return pd.DataFrame(out)


#: How each rate's patches pair across two runs: the unseen sets are the same patches on every model (each set's
#: patch ids), the white-box and cross-bit patches are each model's own (one per target class). Not by training
#: seed: the runs compared come from different training seeds.
PAIR_UNSEEN, PAIR_OWN = ("set", "patch_id"), ("target",)


def _comparable(run: Run, eval_bits, source_bits) -> list[tuple[str, str, list[dict], tuple[str, ...]]]:
    """The compared rates of ``run``: (rate, where, the store selections behind it, how patches pair). One
    selection for an ASR; two, the off-diagonal then the diagonal, for a transfer ratio."""
    from triqdef.eval import cross_bit, robustness
    from triqdef.stages.cross_bit import off_diagonal

    out = [(UNSEEN, f"{b}-bit", [dict(attack="lavan", set=list(robustness.UNSEEN_SETS), bits=b)], PAIR_UNSEEN)
           for b in eval_bits]
    out += [(WHITEBOX, f"{s}-bit", [dict(set=cross_bit.set_name(s), bits=s)], PAIR_OWN) for s in source_bits]
    targets = sorted(run.store.loc[run.store["set"].str.startswith("cross_bit@"), "bits"].unique(), reverse=True)
    out += [(RATIO, f"{s}→{t}", [dict(set=cross_bit.set_name(s), bits=int(t)), dict(set=cross_bit.set_name(s), bits=s)],
             PAIR_OWN) for s, t in off_diagonal(source_bits, targets)]
    return out


def paired_replicates(a: Run, b: Run, selections: list[dict], pair_by: tuple[str, ...], n_boot: int = N_BOOT,
                      seed: int = 0) -> tuple[float, np.ndarray, int, int]:
    """Run ``a``'s rate minus run ``b``'s on common images, patches paired by ``pair_by``
    (:func:`triqdef.eval.outcome_store.aligned`), with its two-way replicates (the same images and patches drawn
    for both runs); a rate of two selections is their ratio (a transfer ratio: off-diagonal over diagonal, all
    four on the same images). Returns the difference, its replicates, the common images and the paired patches."""
    from triqdef.eval import intervals, outcome_store

    frames = [a.store] * len(selections) + [b.store] * len(selections)
    sel = [dict(w, model=a.label) for w in selections] + [dict(w, model=b.label) for w in selections]
    views, _ = outcome_store.aligned(frames, sel, pair_by)
    images, patches = intervals.resampling_counts(views[0].n_images, views[0].n_patches, n_boot, seed)
    reps = [intervals.replicates_of(o, images, patches) for o in views]
    rates = [np.asarray(o.rate(), dtype=float) for o in views]

    def rate_of(values):
        if len(selections) == 1:
            return values[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(values[1] > 0, values[0] / values[1], np.nan)

    k = len(selections)
    value = float(rate_of(rates[:k]) - rate_of(rates[k:]))
    n_common = int(views[0].eligible.any(0).sum())   # aligned: every view has the same eligible (patch, image)s
    return value, rate_of(reps[:k]) - rate_of(reps[k:]), n_common, views[0].n_patches


def _seed_level_differences(model_runs: list[Run], base_runs: list[Run], eval_bits, source_bits, rates,
                            n_boot: int, seed: int):
    """For each compared rate of ``rates`` (:func:`_comparable`): every run of ``model_runs`` minus every run of
    ``base_runs`` on their common images with paired patches (:func:`paired_replicates`), the seeds of both
    resampled (:func:`triqdef.eval.seed_level.seed_level_paired_difference`). Yields (rate, where, the interval in
    the rate's units, the table columns: seeds, common images, patches)."""
    from triqdef.eval import seed_level
    from triqdef.eval.outcome_store import NoCommonImages

    for rate, where, selections, pair_by in _comparable(model_runs[0], eval_bits, source_bits):
        if rate not in rates:
            continue
        values = np.full((len(model_runs), len(base_runs)), np.nan)
        reps = np.full((*values.shape, n_boot), np.nan)
        commons, n_patches = [], 0
        for i, a in enumerate(model_runs):
            for j, b in enumerate(base_runs):
                try:
                    values[i, j], reps[i, j], n_common, n_patches = paired_replicates(a, b, selections, pair_by,
                                                                                      n_boot, seed)
                except NoCommonImages:   # (tiny smoke models) no image eligible for both
                    continue
                commons.append(n_common)
        if not commons:
            continue
        scale = 1 if rate == RATIO else 100
        ci = seed_level.seed_level_paired_difference(values, reps, n_boot, seed)
        yield rate, where, ci, scale, {
            "seeds": f"{len(model_runs)} / {len(base_runs)}",
            "common images": f"{min(commons)}–{max(commons)}" if min(commons) < max(commons) else str(commons[0]),
            "patches": n_patches}


def _by_method(runs: list[Run]) -> dict[str, list[Run]]:
    return {m: [r for r in runs if r.method == m] for m in dict.fromkeys(r.method for r in runs)}


def seed_comparisons(runs: list[Run], eval_bits, source_bits, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """TriQDef minus each baseline (standard QAT, PBAT) on the ASRs and the transfer ratios (lower is the claim),
    at the seed level and paired: every run of TriQDef against every run of the baseline on their common images
    with paired patches (:func:`paired_replicates`), the seeds of both methods resampled
    (:func:`triqdef.eval.seed_level.seed_level_paired_difference`); with the common images (range over the run
    pairs), the paired patches and the verdict."""
    from triqdef.eval import intervals

    by_method = _by_method(runs)
    model_runs = by_method.get(MODEL, [])
    out = []
    for baseline in BASELINES:
        base_runs = by_method.get(baseline, [])
        if not model_runs or not base_runs:
            continue
        for rate, where, ci, scale, cols in _seed_level_differences(model_runs, base_runs, eval_bits, source_bits,
                                                                    (UNSEEN, WHITEBOX, RATIO), n_boot, seed):
            out.append({"comparison": f"{MODEL} − {baseline}", "rate": rate, "where": where, **cols,
                        "difference": scale * ci.value, "difference low": scale * ci.low,
                        "difference high": scale * ci.high, "verdict (lower)": intervals.verdict(ci, "lower")})
    return pd.DataFrame(out)


#: Claim 18 at the seed level: TriQDef's speed settings "do not change the result" where the seed-level interval of
#: TriQDef (settings on) minus the variant (settings off) lies inside +-VARIANT_MARGIN points; outside 0, they do.
VARIANT_MARGIN = 5.0
NO_CHANGE, CHANGES = "no change", "changes the result"


def variant_verdict(low: float, high: float, margin: float = VARIANT_MARGIN) -> str:
    """The equivalence reading of a difference's interval (points): :data:`NO_CHANGE` inside +-``margin``,
    :data:`CHANGES` when it excludes 0, else inconclusive."""
    from triqdef.eval.intervals import INCONCLUSIVE

    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if low > 0 or high < 0:
        return CHANGES
    return NO_CHANGE if -margin <= low and high <= margin else INCONCLUSIVE


def variant_comparisons(runs: list[Run], variants, eval_bits, source_bits, n_boot: int = N_BOOT,
                        seed: int = 0) -> pd.DataFrame:
    """Claim 18 at the seed level: TriQDef (its core run and seed replicas) minus each of its ``variants`` (the
    runs of stage ``variant_seed``, the same seeds) on the unseen and white-box ASRs, paired as
    :func:`seed_comparisons`, read by :func:`variant_verdict`."""
    by_method = _by_method(runs)
    model_runs = by_method.get(MODEL, [])
    out = []
    for variant in variants:
        name = f"{MODEL}-{variant}"
        base_runs = by_method.get(name, [])
        if not model_runs or not base_runs:
            continue
        for rate, where, ci, scale, cols in _seed_level_differences(model_runs, base_runs, eval_bits, source_bits,
                                                                    (UNSEEN, WHITEBOX), n_boot, seed):
            low, high = scale * ci.low, scale * ci.high
            out.append({"comparison": f"{MODEL} − {name}", "rate": rate, "where": where, **cols,
                        "difference": scale * ci.value, "difference low": low, "difference high": high,
                        f"verdict (inside ±{VARIANT_MARGIN:.0f})": variant_verdict(low, high)})
    return pd.DataFrame(out)


def length_table(rates: pd.DataFrame) -> pd.DataFrame:
    """The training-length runs' rates (one training seed), by method, rate, where and steps."""
    cols = ["method", "rate", "where", "steps", "factor", "value", "low", "high", "n_images", "n_patches"]
    return rates[cols].sort_values(["method", "rate", "where", "steps"], kind="stable").reset_index(drop=True)


def length_figure(table: pd.DataFrame, shown_bits=(32, 2)):
    """Unseen ASR, white-box ASR and transfer ratio against training steps (log axis), one line per method and
    bit-width (ratios: from each shown bit-width to the other), with their 95 % intervals."""
    import matplotlib.pyplot as plt

    hi, lo = max(shown_bits), min(shown_bits)
    panels = [(UNSEEN, [f"{b}-bit" for b in shown_bits]), (WHITEBOX, [f"{b}-bit" for b in shown_bits]),
              (RATIO, [f"{hi}→{lo}", f"{lo}→{hi}"])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (rate, wheres) in zip(axes, panels):
        for (method, where), g in table[(table["rate"] == rate) & table["where"].isin(wheres)].groupby(
                ["method", "where"], sort=False):
            g = g.sort_values("steps")
            err = np.vstack([g["value"] - g["low"], g["high"] - g["value"]]).clip(min=0)
            ax.errorbar(g["steps"], g["value"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                        label=f"{method} {where}")
        ax.set_xscale("log")
        ax.set_xlabel("training steps")
        ax.set_title(rate)
        ax.legend(fontsize=7)
    fig.suptitle("Training length: the head-to-head against steps (one training seed; 95 % intervals over "
                 "patches and images)", fontsize=9)
    fig.tight_layout()
    return fig


def stage_times() -> pd.DataFrame:
    """Each replica stage's (training and evaluation) wall time in reference steps, two ways: REPORT's rule
    (``reference_ms``, the median of the measurements within 2 h of its end) and the single measurement nearest it
    (``nearest_ms``); ``within budget`` judges the larger count against :data:`REPLICA_BUDGET_STEPS`."""
    from triqdef.eval.reference import nearest, read_log
    from triqdef.reporting.report import in_reference_steps
    from triqdef.reporting.report import stage_times as times

    log = read_log(paths.results_dir() / "bench" / "reference_log.jsonl")
    t = times(paths.replicas_dir())
    t = t[t["stage"].str.split("/").str[0].isin(GROUPS)].reset_index(drop=True)   # not this stage's own metrics
    t = in_reference_steps(t, log)
    hits = [nearest(log, when) for when in t["created"]]
    t["nearest_ms"] = [float(hit[0]["median_ms"]) if hit else float("nan") for hit in hits]
    t["steps_at_nearest"] = t["seconds"] * 1000 / t["nearest_ms"]
    larger = t[["reference_steps", "steps_at_nearest"]].max(axis=1, skipna=False)
    t["within budget"] = [("–" if v != v else "yes" if v <= REPLICA_BUDGET_STEPS else "**no**") for v in larger]
    return t


def markdown_table(table: pd.DataFrame, floatfmt=".2f") -> str:
    """``table`` as Markdown, each interval as ``value [low, high]`` (its bounds as computed: a seed-level interval
    is not symmetric, and ``value ± half-width`` would show one that excludes 0 as one that does not), empty cells
    blank."""
    shown = table.copy()
    for c in [c for c in table.columns if f"{c} low" in table.columns and f"{c} high" in table.columns]:
        shown[c] = [None if pd.isna(v) else f"{v:{floatfmt}}" if pd.isna(lo) or pd.isna(hi)
                    else f"{v:{floatfmt}} [{lo:{floatfmt}}, {hi:{floatfmt}}]"
                    for v, lo, hi in zip(table[c], table[f"{c} low"], table[f"{c} high"])]
        shown = shown.drop(columns=[f"{c} low", f"{c} high"])
    shown = shown.astype(object).where(shown.notna(), None)
    return shown.to_markdown(index=False, floatfmt=floatfmt, missingval="")


def rates_of(runs: list[Run], cfg) -> pd.DataFrame:
    """:func:`run_rates` of every run in ``runs`` (at ``robustness.bits`` and ``cross_bit.source_bits``), stacked."""
    eval_bits, source_bits = list(cfg.robustness.bits), list(cfg.cross_bit.source_bits)
    return pd.concat([run_rates(r, eval_bits, source_bits, N_BOOT, cfg.base.seed) for r in runs], ignore_index=True)


def times_markdown(*groups: str) -> list[str]:
    """The stage-time section of a summary: each of ``groups``' replica stages against its budget."""
    times = stage_times()
    times = times[times["stage"].str.split("/").str[0].isin(groups)]
    shown = times[["stage", "created", "seconds", "reference_ms", "reference_steps", "nearest_ms",
                   "steps_at_nearest", "within budget"]]
    return ["## Stage times", "",
            f"Each replica stage's wall time in reference steps (budget {REPLICA_BUDGET_STEPS:,} per stage, "
            "issue 30): `reference_ms` is REPORT's rule, the median of the measurements within 2 h of the stage's "
            "end; `nearest_ms` the single measurement nearest it. Where the two differ, the machine's speed changed "
            "inside the window (most often a session boundary), and the truth lies between them; `within budget` "
            "reads the larger of the two counts.", "",
            shown.to_markdown(index=False, floatfmt=",.0f"), ""]


def header(title: str, command: str, stage: str, evaluation: str, meta: dict) -> list[str]:
    """The opening lines of a summary: what generated it, from what, and the provenance."""
    from triqdef.reporting.report import data_source_of

    return [f"# {title}", "",
            f"Generated by `{command}` (DVC stage `{stage}`) from the outcome stores of the core run (stages "
            f"`training`, `cross_bit`) and of the replicas (stage `{evaluation}`). A group of stages apart from the "
            "core: REPORT.md does not depend on it, and `dvc repro report` does not run it "
            "([design](../../docs/design.md#training-seeds)).", "",
            f"Profile `{meta.get('profile')}`, commit `{meta.get('commit')}`, data "
            f"`{data_source_of(paths.results_dir())}`; {N_BOOT:,} bootstrap replicates per interval.", ""]
