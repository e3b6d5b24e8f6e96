"""The project's figures (clean accuracy against bit-width, training curves, Figure 2's alignment heatmaps,
Figure 3's Grad-CAM grid, TriQDef's loss terms), drawn with its style file (loaded by absolute path).

Each figure function takes plain tables or tensors and returns the matplotlib
figure; the notebook stages save it (:func:`triqdef.reporting.tables.save_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from triqdef.reporting import schemas as S

STYLE = Path(__file__).resolve().parent / "triqdef.mplstyle"


def use_style() -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.style.use(str(STYLE))


def smooth(values, window: int = 25) -> np.ndarray:
    """Trailing moving average (for noisy per-step loss curves)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or window <= 1:
        return v
    window = min(window, len(v))
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:window] / np.arange(1, window)
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_bits(table: pd.DataFrame, columns: Sequence[int], title: str):
    """Clean accuracy (%) against bit-width, one line per row of a Table 4 (:func:`triqdef.eval.accuracy.clean_accuracy_table`);
    a row with a single bit-width (the float model) is a dashed reference line."""
    plt = _pyplot()
    columns = list(columns)
    fig, ax = plt.subplots()
    for _, row in table.iterrows():
        xs = [b for b in columns if pd.notna(row[S.accuracy_column(b)])]
        if len(xs) == 1:  # the float model: a reference line
            ax.axhline(row[S.accuracy_column(xs[0])], color="k", ls="--", lw=1, label=row[S.MODEL])
            continue
        ax.plot([columns.index(b) for b in xs], [row[S.accuracy_column(b)] for b in xs], marker="o", label=row[S.MODEL])
    ax.set_xticks(range(len(columns)), [f"{b}" for b in columns])
    ax.set_xlabel("bit-width (weights and activations)")
    ax.set_ylabel("clean accuracy (%)")
    ax.set_title(title)
    ax.legend()
    return fig


def training_curves(fp_history: pd.DataFrame, qat_history: pd.DataFrame, qat_bits: Sequence[int], label_smoothing):
    """Per-step cross-entropy (moving average) of the FP run (column ``loss_fp``) and of each bit-width of the
    joint QAT run (columns ``loss_<b>``), side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(fp_history["step"], smooth(fp_history["loss_fp"]), label="FP")
    axes[0].set(title=f"FP training (label smoothing {label_smoothing})", xlabel="step", ylabel="cross-entropy")
    for b in qat_bits:
        axes[1].plot(qat_history["step"], smooth(qat_history[f"loss_{b}"]), label=f"{b}-bit")
    axes[1].set(title="standard multi-bit QAT", xlabel="step", ylabel="cross-entropy")
    axes[1].legend()
    return fig


def pair_matrix(records: pd.DataFrame, bits: Sequence[int]) -> np.ndarray:
    """Symmetric matrix of ``value`` over pairs of ``bits`` (records with ``pair`` = ``"<bi>-<bj>"``), ones on the diagonal."""
    bits = list(bits)
    mat = np.eye(len(bits))
    for _, row in records.iterrows():
        bi, bj = (bits.index(int(v)) for v in row[S.PAIR].split("-"))
        mat[bi, bj] = mat[bj, bi] = row[S.VALUE]
    return mat


def alignment_heatmaps(records: pd.DataFrame, inputs: Sequence[str], taps: Sequence[str], bits: Sequence[int],
                       metrics: Sequence[str] = (S.EDGE_IOU, S.HOG_COSINE)):
    """Figure 2: one heatmap of :func:`pair_matrix` per (input, metric) row and tap column, from the records of
    :func:`triqdef.eval.alignment.feature_alignment` (``taps`` as named there); each title gives the chance baseline."""
    plt = _pyplot()
    bits = list(bits)
    fig, axes = plt.subplots(len(metrics) * len(inputs), len(taps),
                             figsize=(3.3 * len(taps), 3.0 * len(metrics) * len(inputs)), squeeze=False)
    im = None
    for r, (kind, metric) in enumerate([(k, m) for k in inputs for m in metrics]):
        for c, tap in enumerate(taps):
            sub = records[(records[S.INPUT] == kind) & (records[S.METRIC] == metric) & (records[S.TAP] == tap)]
            mat = pair_matrix(sub, bits)
            ax = axes[r, c]
            im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(bits)), bits)
            ax.set_yticks(range(len(bits)), bits)
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
            ax.set_title(f"{kind} · {metric} · {tap}\nchance {sub[S.CHANCE].mean():.2f}", fontsize=8)
            ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.6, label="similarity")
    return fig


def gradcam_grid(images, labels, cams: Mapping[int, object]):
    """Figure 3: each image (row; float (N, 3, H, W) in [0, 1]) on its own, then overlaid with its Grad-CAM map at
    each bit-width of ``cams`` (bits -> (N, H, W) maps; 32 is titled ``fp``)."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, len(cams) + 1, figsize=(2 * (len(cams) + 1), 2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        axes[i, 0].set_title(f"label {int(labels[i])}" if i == 0 else "")
    for j, (b, maps) in enumerate(cams.items()):
        for i in range(n):
            axes[i, j + 1].imshow(images[i].permute(1, 2, 0).numpy())
            axes[i, j + 1].imshow(maps[i].numpy(), cmap="jet", alpha=0.45)
            if i == 0:
                axes[i, j + 1].set_title("fp" if b == 32 else f"{b}-bit")
    for ax in axes.flat:
        ax.axis("off")
    return fig


def loss_terms(history: pd.DataFrame, pair_reduction: str, stage_starts: Sequence[int] = ()):
    """TriQDef's training history: the classification terms (``loss_clean``, ``loss_adv``) and the penalties
    (``fdp``, ``gpdp``, forward-filled over the steps that skip them), moving averages; a dotted line at the
    start of each later BACT stage."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for k in ("loss_clean", "loss_adv"):
        axes[0].plot(history["step"], smooth(history[k]), label=k)
    axes[0].set(xlabel="step", ylabel="cross-entropy", title="classification terms")
    for k in ("fdp", "gpdp"):
        if k in history:
            axes[1].plot(history["step"], smooth(history[k].ffill()), label=f"L_{k.upper()}")
    axes[1].set(xlabel="step", ylabel="penalty",
                title=f"FDP / GPDP (true value, {'mean over' if pair_reduction == 'mean' else 'sum over'} ordered pairs)")
    for start in stage_starts:
        for ax in axes:
            ax.axvline(start, color="k", ls=":", lw=1)
    for ax in axes:
        ax.legend()
    return fig


def asr_against_size(curve: pd.DataFrame, threshold: float, matched: int | None):
    """Targeted ASR (%) against patch size, one panel per attack: white-box on the FP model and transferred to
    each QAT bit-width (error bars: 95 % bootstrap intervals), the random-noise baseline dashed, the matched-size
    threshold as a horizontal line (``curve``: the table of :mod:`triqdef.stages.attack_strength`)."""
    plt = _pyplot()
    attacks = list(dict.fromkeys(curve["attack"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.2 * len(attacks), 3.8), sharey=True, squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        rows = curve[curve["attack"] == attack]
        for i, view in enumerate(dict.fromkeys(rows["view"])):
            for kind, style in (("optimised", "-"), ("noise", ":")):
                r = rows[(rows["view"] == view) & (rows["patch"] == kind)].sort_values("size")
                err = np.vstack([r["asr"] - r["asr low"], r["asr high"] - r["asr"]])
                ax.errorbar(r["size"], r["asr"], yerr=err, ls=style, marker="o" if kind == "optimised" else None,
                            color=f"C{i}", capsize=2, label=view if kind == "optimised" else None)
        ax.axhline(100 * threshold, color="k", lw=0.8, ls="--")
        if matched is not None and attack == "lavan":
            ax.axvline(matched, color="k", lw=0.8, ls=":")
            ax.annotate(f"matched size {matched} px", (matched, 100 * threshold), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
        ax.set_title(attack.upper())
        ax.set_xlabel("patch size (px)")
        ax.set_xticks(sorted(rows["size"].unique()))
    axes[0][0].set_ylabel("targeted ASR (%)")
    axes[0][0].legend(title="solid: optimised; dotted: noise", fontsize=8)
    return fig


def convergence(curves: Mapping[str, pd.DataFrame], bits: Sequence[int], attacks: Sequence[str]):
    """Each defense's monitor curve against training steps (``defenses.monitor_*``): one column per bit-width, the
    seen-set targeted ASR of each attack (top row, %, shaded: its 95 % interval) and clean accuracy (bottom row, %),
    one colour per defense."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(bits), figsize=(4.6 * len(bits), 6.4), sharex=True, squeeze=False)
    for i, (method, curve) in enumerate(curves.items()):
        for j, b in enumerate(bits):
            for attack, style in zip(attacks, ("-", "--", ":")):
                col = f"asr_{attack}_{b}"
                if col in curve:
                    axes[0][j].plot(curve["step"], 100 * curve[col], style, marker="o", ms=3, color=f"C{i}",
                                    label=f"{method} {attack.upper()}")
                    if f"{col} low" in curve:  # the 95 % interval over images and patches
                        axes[0][j].fill_between(curve["step"], 100 * curve[f"{col} low"], 100 * curve[f"{col} high"],
                                                color=f"C{i}", alpha=0.12, lw=0)
            if f"acc_{b}" in curve:
                axes[1][j].plot(curve["step"], 100 * curve[f"acc_{b}"], marker="o", ms=3, color=f"C{i}", label=method)
    for j, b in enumerate(bits):
        axes[0][j].set_title(f"{'FP' if b == 32 else f'{b} bits'}: seen-set targeted ASR (%)")
        axes[1][j].set(title=f"{'FP' if b == 32 else f'{b} bits'}: clean accuracy (%)", xlabel="training step")
    if curves:
        axes[0][0].legend(fontsize=7, ncol=2)
        axes[1][0].legend(fontsize=7)
    else:
        fig.suptitle("no convergence curve: the monitor was off (defenses.monitor_every: 0)")
    return fig
