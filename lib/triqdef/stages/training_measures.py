"""Stage ``training``'s measurement store (issue 29, item 1): the evidence of Table 17, Table 18 and Figure 3 as
per-item measurements, so that REPORT decides claims 9, 11 and 19 from ``results/outcomes/training_measures.parquet``
alone (:mod:`triqdef.eval.measure_store`; docs/design.md#training-measures).

Measures (``model`` is a row label of :mod:`triqdef.reporting.schemas`):

* ``step_ms`` (Table 17): one training step of each method, ``item`` = the alternation round (every method ran
  once per round, on the same batch, :func:`triqdef.eval.bench.alternating_times`); ``gpdp_step`` (TriQDef, 1/0):
  whether that round's TriQDef step ran GPDP, which it does every ``gpdp_every``-th step. Peak memory (bytes saved
  for backward, one exact count per method, no sampling) is in the store's info.
* ``latency_ms`` (Table 18): the deployed TriQDef and standard-QAT models of one bit-width (``view``) on the same
  batch, ``item`` = the alternation run. Structure identity and hooks per bit-width are in the info.
* ``gradcam_cosine_to_fp`` (Figure 3): cosine of TriQDef's Grad-CAM map at ``view`` bits to its fp map,
  ``item`` = the test image id.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from triqdef import paths
from triqdef.errors import TriqdefError
from triqdef.reporting import schemas as S

STEP_MS, GPDP_STEP, LATENCY_MS, GRADCAM_COSINE = "step_ms", "gpdp_step", "latency_ms", "gradcam_cosine_to_fp"
#: Method keys of :func:`triqdef.eval.bench.train_step_benchmark` -> Table 17's row labels.
METHOD_LABELS = dict(S.DEFENSE_LABELS, qat="QAT")
#: Bootstrap replicates of the intervals, as the other claims.
N_BOOT = 2000


def store_path() -> Path:
    return paths.results_dir() / "outcomes" / "training_measures.parquet"


def _rows(measure: str, model: str, view: str, values) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"measure": measure, "model": model, "view": view, "item": np.arange(len(values)),
                         "value": values})


def bench_rows(bench: dict) -> pd.DataFrame:
    """The ``step_ms`` rows of every method of a :func:`~triqdef.eval.bench.train_step_benchmark` record, and
    TriQDef's ``gpdp_step`` flags."""
    frames = [_rows(STEP_MS, METHOD_LABELS.get(k, k), "", bench[f"{k}_ms_steps"])
              for k in METHOD_LABELS if f"{k}_ms_steps" in bench]
    frames.append(_rows(GPDP_STEP, S.TRIQDEF, "", [float(g) for g in bench["triqdef_gpdp_steps"]]))
    return pd.concat(frames, ignore_index=True)


def latency_rows(times: dict[int, dict[str, list[float]]]) -> pd.DataFrame:
    """``latency_ms`` rows from ``{bits: {row label: [seconds per run]}}``."""
    return pd.concat([_rows(LATENCY_MS, label, str(b), 1000 * np.asarray(ts)) for b, per in times.items()
                      for label, ts in per.items()], ignore_index=True)


def gradcam_rows(cosines: dict[int, "object"], image_ids) -> pd.DataFrame:
    """``gradcam_cosine_to_fp`` rows of TriQDef from ``{bits: per-image cosines}`` on the test images ``image_ids``."""
    ids = np.asarray(image_ids, dtype=np.int64)
    return pd.concat([_rows(GRADCAM_COSINE, S.TRIQDEF, str(b), np.asarray(c, dtype=float)).assign(item=ids)
                      for b, c in cosines.items()], ignore_index=True)


# --------------------------------------------------------------------------- Table 17 and claim 9


def step_time_ratio(store: pd.DataFrame, info: dict, model: str = S.TRIQDEF, reference: str = "QAT",
                    n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Mean step time of ``model`` over that of ``reference``, with its ``level`` bootstrap interval.

    TriQDef runs GPDP on one step in ``gpdp_every`` (``info['gpdp_every']``), so a window of steps holds GPDP steps
    in a share that depends on where it starts. The estimator weights the rounds with and without a GPDP step as
    training does (1/k and 1 − 1/k) for both methods, the ratio of those means; the bootstrap redraws rounds within
    each of the two strata, the same rounds for both methods (paired: machine noise of a round hits both).
    """
    from triqdef.eval.measure_store import values

    if not 0 < level < 1:
        raise TriqdefError(f"interval level {level!r}: expected a coverage level in (0, 1), e.g. 0.95")
    a, b = values(store, STEP_MS, model), values(store, STEP_MS, reference)
    rounds = a.index.intersection(b.index)
    if rounds.empty:
        raise TriqdefError(f"step times of {model} and {reference} share no round: expected one benchmark run")
    k = int(info.get("gpdp_every", 1))
    flags = values(store, GPDP_STEP, S.TRIQDEF).reindex(rounds).fillna(0).to_numpy(bool) if k > 1 else \
        np.zeros(len(rounds), bool)
    strata = [(np.flatnonzero(flags), 1 / k), (np.flatnonzero(~flags), 1 - 1 / k)]
    strata = [(idx, w) for idx, w in strata if len(idx)]
    total = sum(w for _, w in strata)
    x, y = a.loc[rounds].to_numpy(float), b.loc[rounds].to_numpy(float)

    def ratio(draw):
        return sum(w * x[i].mean() for i, w in draw) / sum(w * y[i].mean() for i, w in draw)

    rng = np.random.default_rng(seed)
    reps = np.array([ratio([(idx[rng.integers(0, len(idx), len(idx))], w / total) for idx, w in strata])
                     for _ in range(n_boot)])
    tail = 100 * (1 - level) / 2
    return {"value": float(ratio([(idx, w / total) for idx, w in strata])), "low": float(np.percentile(reps, tail)),
            "high": float(np.percentile(reps, 100 - tail)), "n_rounds": int(len(rounds)),
            "n_gpdp_rounds": int(flags.sum()), "gpdp_every": k}


def cost_table(store: pd.DataFrame, info: dict, reference: str = "QAT") -> pd.DataFrame:
    """Table 17 from the store: per method, images/s, mean ms per step, peak MB saved for backward, and time (with
    its 95 % interval, :func:`step_time_ratio`) and memory relative to ``reference``."""
    steps = store[store["measure"] == STEP_MS]
    peak, batch = info["peak_mb"], info["batch_size"]
    rows = []
    for label in dict.fromkeys(steps["model"]):
        r = step_time_ratio(store, info, label, reference)
        ms = steps.loc[steps["model"] == label, "value"].mean()
        rows.append({S.METHOD: label, S.T17_IMAGES_PER_S: round(batch / ms * 1000, 1), S.T17_ITER_MS: round(ms, 1),
                     S.T17_PEAK_MB: peak[label], S.T17_TIME_RATIO: round(r["value"], 2),
                     "time ratio 95% CI": f"{r['low']:.2f}–{r['high']:.2f}",
                     S.T17_MEM_RATIO: round(peak[label] / peak[reference], 2)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Table 18 and claim 11


def latency_table(store: pd.DataFrame, info: dict, model: str = S.TRIQDEF, reference: str = S.STANDARD_QAT) -> pd.DataFrame:
    """Table 18 from the store: per bit-width (in the order measured), the structure identity and hooks (info), the
    median latency of each model, and the median and p10–p90 of the per-run ratio ``model`` / ``reference``."""
    from triqdef.eval.measure_store import values

    rows = []
    for view, facts in info["structure"].items():
        a, b = values(store, LATENCY_MS, model, view), values(store, LATENCY_MS, reference, view)
        ratios = (a / b).dropna().tolist()
        q = statistics.quantiles(ratios, n=10) if len(ratios) > 1 else ratios * 9
        rows.append({S.T18_BITS: int(view), S.T18_SAME_STRUCTURE: bool(facts["same_structure"]),
                     S.T18_HOOKS: int(facts["hooks"]), S.T18_TRIQDEF_MS: round(float(a.median()), 2),
                     S.T18_QAT_MS: round(float(b.median()), 2), S.T18_RATIO: round(statistics.median(ratios), 3),
                     S.T18_RATIO_RANGE: f"{q[0]:.3f}–{q[-1]:.3f}"})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Figure 3 and claim 19


def gradcam_claims(store: pd.DataFrame, threshold: float, model: str = S.TRIQDEF, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[dict[str, tuple[float, float, float, int]], str]:
    """Per bit-width, the mean Grad-CAM cosine to the fp map with its 95 % bootstrap interval over test images and
    the number of images; and the verdict of "above ``threshold`` at every bit-width"
    (:func:`triqdef.eval.measure_store.every_item_claim`: intersection-union, Bonferroni on the failing side)."""
    from triqdef.eval.measure_store import every_item_claim, mean_interval, values

    views = list(dict.fromkeys(store.loc[(store["measure"] == GRADCAM_COSINE) & (store["model"] == model), "view"]))
    if not views:
        raise TriqdefError(f"measurement store has no {GRADCAM_COSINE} of {model}: expected stage training's Figure 3")
    series = {v: values(store, GRADCAM_COSINE, model, v) for v in views}
    means = {v: (*mean_interval(s, n_boot, seed + int(v)), len(s)) for v, s in series.items()}
    intervals = {v: (lambda level, s=s, v=v: mean_interval(s, n_boot, seed + int(v), level)[1:])
                 for v, s in series.items()}
    return means, every_item_claim(intervals, "higher", threshold)
