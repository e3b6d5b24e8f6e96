"""Matplotlib helpers with the project's style file (loaded by absolute path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
