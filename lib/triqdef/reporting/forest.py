"""REPORT.md's forest plot (issue 29, item 8): every interval a claim's verdict rests on, against the claim's own
threshold, coloured by its verdict.

An interval is drawn as its distance to the claimed threshold, oriented so that the claimed side is to the right
of zero: for "higher than m" the value minus m, for "lower than m" m minus the value. A claim *holds* where its
interval lies wholly right of the line, *does not hold* where it lies wholly left; one figure then reads every
claim, whatever its units (a rate against 70 %, a difference against 0, a proportion against 0.7 of a rate).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from triqdef.errors import TriqdefError

COLOURS = {"holds": "#1b7837", "does not hold": "#b2182b", "too few patches to decide": "#8c6bb1",
           "at the noise floor": "#d9a400"}   # a relative claim where a rate is not above a random patch's
OTHER = "#7f7f7f"   # inconclusive at this sample size
_CLAIMED = re.compile(r"^(higher|lower) than (-?[0-9.]+(?:e[-+]?\d+)?)$")


@dataclass(frozen=True)
class Evidence:
    """One interval behind a REPORT claim, in points (or %): the claimed direction and threshold, its verdict and
    the sample behind it."""

    claim_number: int
    statement: str
    value: float
    low: float
    high: float
    direction: str     # "higher" | "lower"
    margin: float
    verdict: str
    n_images: int
    n_patches: int
    regime: str

    def oriented(self) -> tuple[float, float, float]:
        """(centre, low, high) as distances to the threshold, the claimed side positive."""
        if self.direction == "higher":
            return self.value - self.margin, self.low - self.margin, self.high - self.margin
        return self.margin - self.value, self.margin - self.high, self.margin - self.low


def parse_claimed(text: str) -> tuple[str, float]:
    """``"higher than 20"`` -> ``("higher", 20.0)`` (the form :func:`triqdef.eval.intervals.claim_evidence` writes)."""
    m = _CLAIMED.match(str(text).strip())
    if not m:
        raise TriqdefError(f"claim {text!r}: expected 'higher than M' or 'lower than M'")
    return m.group(1), float(m.group(2))


def forest(evidence: Sequence[Evidence], titles: dict[int, str]):
    """The figure: one row per interval, grouped by claim (``titles``: claim number -> short title)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from triqdef.reporting.plots import use_style

    use_style()
    rows = [e for e in evidence if np.isfinite([e.value, e.low, e.high]).all()]
    if not rows:
        raise TriqdefError("forest plot: no claim has an interval to draw")
    n_claims = len({e.claim_number for e in rows})
    fig, ax = plt.subplots(figsize=(9.5, 1.0 + 0.17 * (len(rows) + n_claims)))
    ticks, labels, headings, current, y = [], [], [], None, 0.0
    for e in rows:
        if e.claim_number != current:   # a heading row: the claim's number and short title
            current = e.claim_number
            title = titles.get(e.claim_number, "")
            ticks.append(y)
            labels.append(f"{e.claim_number}. {title if len(title) <= 70 else title[:69] + '…'}")
            headings.append(len(labels) - 1)
            ax.axhline(y, color="#dddddd", lw=0.6, zorder=0)
            y += 1.0
        centre, low, high = e.oriented()
        colour = COLOURS.get(e.verdict, OTHER)
        ax.plot([low, high], [y, y], color=colour, lw=2, solid_capstyle="butt")
        ax.plot([centre], [y], "o", color=colour, ms=3.5)
        ticks.append(y)
        label = e.statement if len(e.statement) <= 64 else e.statement[:63] + "…"
        labels.append(f"{label} ({e.n_patches} p.)" if e.n_patches > 1 else label)
        y += 1.0
    ax.set_yticks(ticks, labels, fontsize=6.5)
    for i, tick in enumerate(ax.get_yticklabels()):
        if i in headings:
            tick.set_fontweight("bold")
            tick.set_fontsize(7.5)
    ax.set_ylim(y, -1.0)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("distance to the claimed threshold (points; the claim's side to the right)")
    handles = [Line2D([], [], color=c, lw=2, label=v) for v, c in COLOURS.items()]
    handles.append(Line2D([], [], color=OTHER, lw=2, label="inconclusive at this sample size"))
    ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True)
    ax.set_title("Each claim's intervals (95 %) against its threshold", fontsize=10)
    return fig
