"""Stage ``replicas``: the training-seed spread and the training-length curves, with seed-level intervals
(issue 30, items 5 and 7; issue 29, item 6; docs/design.md#training-seeds, #training-length).

It reads the core run of each method (stage ``defense``, training seed ``base.seed``, evaluated by stages
``training`` (Table 5's store) and ``cross_bit``) and its replicas (stages ``defense_seed`` / ``defense_length``,
evaluated the same way by ``seed_eval`` / ``length_eval``), and computes for every run the headline rates:

- clean accuracy at each of ``robustness.bits`` (all test images; 95 % Wilson interval);
- the unseen ASR: targeted ASR of the five unseen LAVAN sets together (Table 5's rows, the deciding regime);
- the white-box ASR at each ``cross_bit.source_bits`` (patches made on the run's own model at that bit-width);
- the transfer ratio r(s, t) = ASR(s → t) / ASR(s → s) at every off-diagonal pair.

Outputs, all under ``results/replicas/`` (no core stage and not REPORT.md depend on them):

- table ``seed_spread``: per method and rate, each seed's value, the seed mean with its seed-level interval
  (:mod:`triqdef.eval.seed_level`: seeds, then patches, then images), the seed-to-seed sd against the runs' own
  sampling se, and which of the two dominates;
- table ``seed_comparisons``: TriQDef minus standard QAT and minus PBAT, seed means, seed-level intervals, verdicts;
- table ``training_length`` and figure ``training_length``: each rate against the training steps;
- ``REPLICAS.md``: the three, what ran, and each replica stage's time in reference steps against its budget.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from triqdef import paths
from triqdef.errors import TriqdefError

#: The params.yaml sections this stage reads.
PARAMS = ("base", "robustness", "cross_bit", "seeds", "training_length")
#: The replica groups: results/replicas/{models,metadata,metrics,plots,outcomes}/<group>/.
GROUPS = ("seeds", "length")
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


def replica_run(cfg, method: str, training_seed: int | None = None, factor: float | None = None) -> Run:
    """A replica: its training metrics (stage ``defense_seed`` / ``defense_length``) and its evaluation's store."""
    from triqdef.eval import outcome_store
    from triqdef.stages import defense, replica_eval

    group, run = defense.run_folder(None, training_seed, factor), defense.run_name(method, None, training_seed, factor)
    item = f"{method}-{training_seed}" if factor is None else f"{method}-{factor:g}"
    evaluation, training = ("seed_eval", "defense_seed") if factor is None else ("length_eval", "defense_length")
    path = replica_eval.store_path(group, run)
    if not path.is_file():
        raise TriqdefError(f"outcome store {path} not found: expected the output of stage {evaluation}@{item}")
    return _run(method, paths.replicas_dir() / "metrics" / group / f"{run}.json", outcome_store.read(path),
                cfg.base.seed if training_seed is None else training_seed, 1.0 if factor is None else factor,
                f"{training}@{item}")


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


def seed_comparisons(rates: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """TriQDef's seed mean minus each baseline's (standard QAT, PBAT) on the ASRs and the transfer ratios (lower is
    the claim), with the seed-level interval of the difference and its verdict."""
    from triqdef.eval import intervals, seed_level

    out = []
    asr = rates[rates["rate"] != CLEAN]
    for baseline in BASELINES:
        for (rate, where), g in asr.groupby(["rate", "where"], sort=False):
            a, b = (g[(g["method"] == m) & np.isfinite(g["value"])] for m in (MODEL, baseline))
            if a.empty or b.empty:
                continue
            ci = seed_level.seed_level_difference((list(a["value"]), list(a["replicates"])),
                                                  (list(b["value"]), list(b["replicates"])), n_boot, seed)
            scale = 100 if rate != RATIO else 1
            verdict = intervals.verdict(intervals.Interval(ci.value / scale, ci.low / scale, ci.high / scale, 0, 0, 0,
                                                           n_boot), "lower")
            out.append({"comparison": f"{MODEL} − {baseline}", "rate": rate, "where": where, "seeds": f"{len(a)} / {len(b)}",
                        "difference": ci.value, "difference low": ci.low, "difference high": ci.high,
                        "verdict (lower)": verdict})
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
    """Each replica stage's (training and evaluation) wall time and reference steps (the reference measured
    nearest its run), against :data:`REPLICA_BUDGET_STEPS`."""
    from triqdef.eval.reference import read_log
    from triqdef.reporting.report import in_reference_steps
    from triqdef.reporting.report import stage_times as times

    t = times(paths.replicas_dir())
    t = t[t["stage"].str.split("/").str[0].isin(GROUPS)].reset_index(drop=True)   # not this stage's own metrics
    t = in_reference_steps(t, read_log(paths.results_dir() / "bench" / "reference_log.jsonl"))
    t["within budget"] = [("–" if v != v else "yes" if v <= REPLICA_BUDGET_STEPS else "**no**")
                          for v in t["reference_steps"]]
    return t


def _markdown(table: pd.DataFrame, floatfmt=".2f") -> str:
    from triqdef.reporting.tables import with_half_widths

    shown = with_half_widths(table, floatfmt)
    shown = shown.astype(object).where(shown.notna(), None)
    return shown.to_markdown(index=False, floatfmt=floatfmt, missingval="")


def run_replicas(cfg, progress: bool = True) -> dict:
    """Stage ``replicas``: the tables ``seed_spread``, ``seed_comparisons``, ``training_length``, the figure
    ``training_length``, ``results/replicas/REPLICAS.md`` and the metrics ``results/replicas/metrics/replicas.json``."""
    from triqdef.meta import provenance, write_metrics, write_text
    from triqdef.reporting import plots
    from triqdef.reporting.tables import save_figure, save_table

    start = time.perf_counter()
    sd, tl, seed = cfg.seeds, cfg.training_length, cfg.base.seed
    eval_bits, source_bits = list(cfg.robustness.bits), list(cfg.cross_bit.source_bits)
    cores = {m: core_run(cfg, m) for m in dict.fromkeys(list(sd.methods) + list(tl.methods))}
    seed_runs = [cores[m] for m in sd.methods] + [replica_run(cfg, m, training_seed=k) for m in sd.methods
                                                  for k in sd.training_seeds]
    length_runs = [cores[m] for m in tl.methods] + [replica_run(cfg, m, factor=f) for m in tl.methods for f in tl.factors]
    rate_cache: dict[int, pd.DataFrame] = {}

    def rates_of(runs):
        frames = []
        for r in runs:
            if id(r) not in rate_cache:
                rate_cache[id(r)] = run_rates(r, eval_bits, source_bits, N_BOOT, seed)
            frames.append(rate_cache[id(r)])
        return pd.concat(frames, ignore_index=True)

    seed_rates, length_rates = rates_of(seed_runs), rates_of(length_runs)
    spread = seed_spread(seed_rates, N_BOOT, seed)
    comparisons = seed_comparisons(seed_rates, N_BOOT, seed)
    lengths = length_table(length_rates)
    out = paths.replicas_dir()
    meta = provenance(cfg, {"seeds": [seed] + list(sd.training_seeds), "methods": list(sd.methods),
                            "length_methods": list(tl.methods), "factors": [1.0] + list(tl.factors),
                            "eval_bits": eval_bits, "source_bits": source_bits, "n_boot": N_BOOT})
    seeds_text = ", ".join(str(s) for s in [seed] + list(sd.training_seeds))
    save_table(spread, "seed_spread", meta, out / "tables", floatfmt=".2f", caption=(
        f"Training seeds {seeds_text} (the first: the core run) of {', '.join(sd.methods)}: each headline rate per "
        f"seed, the seed mean with its seed-level 95 % interval (seeds, then patches, then images), the seed-to-seed "
        f"sd against the runs' mean sampling se, and which dominates. Profile `{cfg.base.profile}`."))
    save_table(comparisons, "seed_comparisons", meta, out / "tables", floatfmt=".2f", caption=(
        "TriQDef's seed mean minus each baseline's, with the seed-level 95 % interval (seeds drawn independently per "
        "method); 'lower' holds when the interval lies below 0. Not familywise: read with the count of rows."))
    save_table(lengths, "training_length", meta, out / "tables", floatfmt=".2f", caption=(
        f"{', '.join(tl.methods)} trained for {', '.join(f'{f:g}' for f in [1.0] + list(tl.factors))} × the core "
        f"run's steps (one training seed, {seed}): each headline rate with its 95 % interval."))
    plots.use_style()
    save_figure(length_figure(lengths, (max(eval_bits), min(eval_bits))), "training_length", out / "figures")
    times = stage_times()
    write_text(out / "REPLICAS.md", replicas_markdown(cfg, meta, spread, comparisons, lengths, times))
    headline = {f"{r['method']} {r['rate']} {r['where']} sd": round(float(r["sd (seeds)"]), 3)
                for r in spread.to_dict("records") if r["rate"] != RATIO and np.isfinite(r.get("sd (seeds)", np.nan))}
    headline["stage_wall_time_s"] = round(time.perf_counter() - start, 1)
    write_metrics("replicas", headline, meta, results=out)
    return headline


def replicas_markdown(cfg, meta: dict, spread: pd.DataFrame, comparisons: pd.DataFrame, lengths: pd.DataFrame,
                      times: pd.DataFrame) -> str:
    """``results/replicas/REPLICAS.md``."""
    from triqdef.reporting.report import data_source_of

    sd, tl = cfg.seeds, cfg.training_length
    dominant = spread["dominates"].value_counts().to_dict() if "dominates" in spread else {}
    lines = ["# Training seeds and training length (the replica group)", "",
             "Generated by `triqdef replicas summary` (DVC stage `replicas`) from the outcome stores of the core run "
             "(stages `training`, `cross_bit`) and of the replicas (stages `seed_eval`, `length_eval`). A group of "
             "stages apart from the core: REPORT.md does not depend on it, and `dvc repro report` does not run it "
             "([design](../../docs/design.md#training-seeds)).", "",
             f"Profile `{meta.get('profile')}`, commit `{meta.get('commit')}`, data `{data_source_of(paths.results_dir())}`; "
             f"{N_BOOT:,} bootstrap replicates per interval.", "",
             "## Training seeds", "",
             f"{', '.join(sd.methods)}, each trained with seeds {', '.join(str(s) for s in meta['seeds'])} (the first "
             "is the core run) from the same start checkpoint and data, each drawing its batches and its training's "
             "randomness from its own seed, and evaluated on the same test images with the same patches. Over all rates, the seed-to-seed spread "
             f"dominates the runs' own sampling error in {dominant.get('seed spread', 0)} and sampling dominates in "
             f"{dominant.get('sampling', 0)} (a single run's verdict is at the mercy of the training seed where the "
             "former holds).", "", _markdown(spread), "",
             "### TriQDef against the baselines, seed level", "", _markdown(comparisons), "",
             "## Training length", "",
             f"{', '.join(tl.methods)} at {', '.join(f'{f:g}' for f in meta['factors'])} × the core run's steps, one "
             "training seed.", "", "![training length](figures/training_length.png)", "", _markdown(lengths), "",
             "## Stage times", "",
             f"Each replica stage's wall time in reference steps (budget {REPLICA_BUDGET_STEPS:,} per stage, "
             "issue 30).", ""]
    shown = times[["stage", "created", "seconds", "reference_ms", "reference_steps", "within budget"]]
    lines += [shown.to_markdown(index=False, floatfmt=",.0f"), ""]
    return "\n".join(lines) + "\n"
