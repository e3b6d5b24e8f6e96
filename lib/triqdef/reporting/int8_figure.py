"""The figure of issue 32's table ``int8_runtime`` (stage ``int8``, notebook 04): each model's paired ASR difference
int8 − fake-quantized 8-bit against the equivalence band, and the latency of both runtimes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from triqdef.reporting import schemas as S


def int8_differences(table: pd.DataFrame, sets: Sequence[str], margin: float):
    """Issue 32's table ``int8_runtime`` at a glance. Left: each model's paired ASR difference int8 − fake-quantized
    8-bit (points) per patch set, with its 95 % interval, against the equivalence band ±``margin``; right: median
    latency at the largest batch of the table, fp32 deployed view against int8."""
    import matplotlib.pyplot as plt

    models = list(table[S.MODEL])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.55 * len(models) + 1.8), gridspec_kw={"width_ratios": [3, 2]})
    ax.axvspan(-margin, margin, color="#1b7837", alpha=0.1, lw=0, label=f"equivalence band ±{margin:g}")
    ax.axvline(0, color="k", lw=0.8)
    offsets = np.linspace(-0.22, 0.22, len(sets))
    for k, (name, dy) in enumerate(zip(sets, offsets)):
        ys = np.arange(len(models)) + dy
        value = table[f"{name} int8 − fake"].to_numpy()
        err = np.vstack([value - table[f"{name} int8 − fake low"], table[f"{name} int8 − fake high"] - value])
        ax.errorbar(value, ys, xerr=err, fmt="o", ms=4, capsize=2, color=f"C{k}", label=name.replace("whitebox", "white-box"))
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set_xlabel("targeted LAVAN ASR, int8 − fake-quantized 8-bit (points)")
    ax.legend(fontsize=7, loc="lower right")
    batch = max(int(c.split()[1][1:]) for c in table.columns if c.startswith("latency b"))
    ys = np.arange(len(models))
    for k, runtime in enumerate(("fp32", "int8")):
        bx.barh(ys + (k - 0.5) * 0.38, table[f"latency b{batch} {runtime} (ms)"], height=0.38, color=f"C{k + 3}",
                label=runtime)
    bx.set_yticks(ys, [""] * len(models))
    bx.tick_params(axis="y", length=0)
    bx.invert_yaxis()
    bx.set_xlabel(f"median latency at batch {batch} (ms)")
    bx.legend(fontsize=7)
    return fig
