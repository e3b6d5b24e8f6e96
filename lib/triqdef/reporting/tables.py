"""Results as records first, tables rendered from them (CSV + Markdown + metadata JSON), figures as PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from triqdef import paths
from triqdef.meta import atomic_path, write_json, write_text


def save_table(df: pd.DataFrame, name: str, meta: dict, directory: Path | None = None, caption: str = "",
               floatfmt: str | dict[str, str] = ".1f") -> dict[str, Path]:
    """Write ``name.csv``, ``name.md`` (with caption and provenance line) and ``name.json`` (metadata) atomically.

    ``floatfmt``: the Markdown number format, one for every column or ``{column: format}`` (others ``.1f``).
    """
    directory = Path(directory or paths.tables_dir())
    csv, md, js = directory / f"{name}.csv", directory / f"{name}.md", directory / f"{name}.json"
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    prov = f"_profile `{meta.get('profile')}`, data `{meta.get('data', {}).get('source')}`, commit `{str(meta.get('commit'))[:12]}`_"
    shown = with_half_widths(df, floatfmt if isinstance(floatfmt, str) else ".1f")
    shown = shown.astype(object).where(shown.notna(), None)  # blank cells, not "nan"
    if isinstance(floatfmt, dict):
        floatfmt = [floatfmt.get(c, ".1f") for c in shown.columns]
    body = shown.to_markdown(index=False, floatfmt=floatfmt, missingval="")
    write_text(md, (f"{caption}\n\n" if caption else "") + body + "\n\n" + prov + "\n")
    write_json(js, dict(meta, table=name, caption=caption, columns=list(df.columns)))
    return {"csv": csv, "md": md, "json": js}


def caption_with_claims(caption: str, claims: list[dict]) -> str:
    """A caption followed by each claim's interval and verdict (:func:`triqdef.eval.intervals.claim_text`); the
    claims themselves go in the table's metadata (key ``claims``), where REPORT.md reads them."""
    from triqdef.eval.intervals import claim_text

    return caption + (" Claims (95% CI): " + "; ".join(claim_text(c) for c in claims) + "." if claims else "")


def with_half_widths(df: pd.DataFrame, fmt: str = ".1f") -> pd.DataFrame:
    """The table as the Markdown shows it: every column ``c`` with ``c low`` and ``c high`` beside it becomes
    ``rate ± half-width`` (the interval's half width; docs/design.md#intervals-and-verdicts), the bounds dropped."""
    out = df.copy()
    for c in [c for c in df.columns if f"{c} low" in df.columns and f"{c} high" in df.columns]:
        half = (df[f"{c} high"] - df[f"{c} low"]) / 2
        out[c] = [None if pd.isna(v) else f"{v:{fmt}}" if pd.isna(h) else f"{v:{fmt}} ± {h:{fmt}}"
                  for v, h in zip(df[c], half)]
        out = out.drop(columns=[f"{c} low", f"{c} high"])
    return out


def save_figure(fig, name: str, directory: Path | None = None, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    directory = Path(directory or paths.figures_dir())
    path = directory / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
