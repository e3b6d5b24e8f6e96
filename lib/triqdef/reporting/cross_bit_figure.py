"""The figure of stage ``cross_bit`` (issue 30, item 1): one heatmap per defended model, the targeted ASR of patches
made white-box at each source bit-width (rows) evaluated at each bit-width of the same model (columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def transfer_heatmaps(matrix: pd.DataFrame):
    """``matrix``: the rows of :func:`triqdef.eval.cross_bit.transfer_matrix` for several models (columns model,
    source_bits, target_bits, asr, low, high). One panel per model, in the order they appear, on a common colour
    scale; each cell shows the ASR (%) and its 95 % interval, the diagonal (the white-box attack) framed."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(matrix["model"]))
    top = max(float(matrix["asr"].max()), 1.0)
    fig, axes = plt.subplots(1, len(models), figsize=(3.1 * len(models) + 0.8, 3.3), squeeze=False)
    image = None
    for ax, model in zip(axes[0], models):
        rows = matrix[matrix["model"] == model]
        sources = sorted(rows["source_bits"].unique(), reverse=True)
        targets = sorted(rows["target_bits"].unique(), reverse=True)
        grid = np.full((len(sources), len(targets)), np.nan)
        for _, r in rows.iterrows():
            i, j = sources.index(r["source_bits"]), targets.index(r["target_bits"])
            grid[i, j] = r["asr"]
            ax.text(j, i, f"{r['asr']:.0f}\n[{r['low']:.0f}, {r['high']:.0f}]", ha="center", va="center", fontsize=6.5,
                    color="white" if r["asr"] > 0.6 * top else "black")
            if r["source_bits"] == r["target_bits"]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="#d95f02"))
        image = ax.imshow(grid, vmin=0, vmax=top, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(targets)), [str(t) for t in targets])
        ax.set_yticks(range(len(sources)), [str(s) for s in sources])
        ax.set_xlabel("evaluated at (bits)")
        ax.set_title(model, fontsize=9)
    axes[0][0].set_ylabel("patch made at (bits)")
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.02, pad=0.02, label="targeted ASR (%)")
    return fig
