"""Stage ``length_summary``: TriQDef's and PBAT's headline rates against training length (issue 30, item 7;
docs/design.md#training-length).

It reads the core run of each method in ``training_length.methods`` (1× the core steps, training seed
``base.seed``) and its runs at ``training_length.factors`` × those steps (stages ``defense_length`` +
``length_eval``), and writes, under ``results/replicas/``:

- table ``tables/length/training_length``: each run's headline rates (:func:`triqdef.stages.replicas.run_rates`)
  with their 95 % intervals, by method, rate, bit-width and steps;
- figure ``figures/training_length``: unseen ASR, white-box ASR and transfer ratio against the steps;
- ``LENGTH.md``: both, and each length stage's time in reference steps against its budget;
- metrics ``metrics/length_summary.json``: TriQDef − PBAT unseen ASR at each bit-width and length.
"""

from __future__ import annotations

import time

import pandas as pd

from triqdef import paths
from triqdef.stages import replicas
from triqdef.stages.replicas import UNSEEN

#: The params.yaml sections this stage reads.
PARAMS = ("base", "robustness", "cross_bit", "training_length")
GROUP = "length"


def run_length_summary(cfg, progress: bool = True) -> dict:
    """Stage ``length_summary``: table and figure ``training_length``, ``results/replicas/LENGTH.md`` and the
    metrics ``results/replicas/metrics/length_summary.json``."""
    from triqdef.meta import provenance, write_metrics, write_text
    from triqdef.reporting import plots
    from triqdef.reporting.tables import save_figure, save_table

    start = time.perf_counter()
    tl, seed = cfg.training_length, cfg.base.seed
    eval_bits = list(cfg.robustness.bits)
    runs = [replicas.core_run(cfg, m) for m in tl.methods] + [
        replicas.replica_run(cfg, m, factor=f) for m in tl.methods for f in tl.factors]
    lengths = replicas.length_table(replicas.rates_of(runs, cfg))
    out = paths.replicas_dir()
    factors = sorted([1.0] + list(tl.factors))
    meta = provenance(cfg, {"methods": list(tl.methods), "factors": factors, "training_seed": seed,
                            "eval_bits": eval_bits, "source_bits": list(cfg.cross_bit.source_bits),
                            "n_boot": replicas.N_BOOT})
    save_table(lengths, "training_length", meta, out / "tables" / GROUP, floatfmt=".2f", caption=(
        f"{', '.join(tl.methods)} trained for {', '.join(f'{f:g}' for f in factors)} × the core run's steps (one "
        f"training seed, {seed}): each headline rate with its 95 % interval. Profile `{cfg.base.profile}`."))
    plots.use_style()
    save_figure(replicas.length_figure(lengths, (max(eval_bits), min(eval_bits))), "training_length",
                out / "figures")
    write_text(out / "LENGTH.md", length_markdown(cfg, meta, lengths))
    headline = gaps(lengths)
    headline["stage_wall_time_s"] = round(time.perf_counter() - start, 1)
    write_metrics("length_summary", headline, meta, results=out)
    return headline


def gaps(lengths: pd.DataFrame, model: str = "triqdef", baseline: str = "pbat") -> dict:
    """``model`` − ``baseline`` unseen ASR (points) at each bit-width and step count both ran."""
    u = lengths[lengths["rate"] == UNSEEN].pivot_table(index=["where", "steps"], columns="method", values="value")
    if model not in u or baseline not in u:
        return {}
    d = (u[model] - u[baseline]).dropna()
    return {f"{model} - {baseline} unseen ASR {where} {steps} steps": round(float(v), 2)
            for (where, steps), v in d.items()}


def length_markdown(cfg, meta: dict, lengths: pd.DataFrame) -> str:
    """``results/replicas/LENGTH.md``."""
    lines = replicas.header("Training length (the replica group)", "triqdef replicas length-summary",
                            "length_summary", "length_eval", meta)
    lines += [f"{', '.join(cfg.training_length.methods)} at {', '.join(f'{f:g}' for f in meta['factors'])} × the "
              f"core run's steps, one training seed ({cfg.base.seed}); the 1× run is the core run.", "",
              "![training length](figures/training_length.png)", "", replicas.markdown_table(lengths), ""]
    lines += replicas.times_markdown(GROUP)
    return "\n".join(lines) + "\n"
