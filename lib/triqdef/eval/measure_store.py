"""Per-item measurements as one Parquet file (issue 29, item 1, for the claims whose evidence is a continuous
quantity per test image rather than a classification outcome; docs/design.md#outcome-stores).

A row says which quantity (``measure``) was measured on which model and view (a bit-width, a pair of bit-widths, a
layer …), on which item (a test image id), and its value. The means a table reports and the intervals a claim
reads are functions of these rows (:func:`values`, :func:`mean_interval`, :func:`paired_mean_difference`), so
``triqdef report`` recomputes them from the file alone, as it does for :mod:`triqdef.eval.outcome_store`.
Writes are atomic; a file with a missing column, a wrong type or a repeated (measure, model, view, item) is refused
with one :class:`~triqdef.errors.TriqdefError` line that names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from triqdef.errors import TriqdefError

#: column -> kind
COLUMNS: dict[str, str] = {"measure": "str", "model": "str", "view": "str", "item": "int", "value": "float"}
KEY = ("measure", "model", "view", "item")


def validate(frame, where: str = "measurement store") -> pd.DataFrame:
    """The frame with the store's columns in order and types checked; one TriqdefError line naming ``where``."""
    if not isinstance(frame, pd.DataFrame):
        raise TriqdefError(f"{where}: expected a table of measurements, got {type(frame).__name__}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TriqdefError(f"{where} lacks column(s) {', '.join(missing)}: expected {', '.join(COLUMNS)}")
    out = frame[list(COLUMNS)].copy()
    for column, kind in COLUMNS.items():
        v = out[column]
        if kind == "int" and not (pd.api.types.is_integer_dtype(v) and not pd.api.types.is_bool_dtype(v)):
            raise TriqdefError(f"{where}: column {column} is {v.dtype}, expected integers")
        if kind == "float" and not pd.api.types.is_numeric_dtype(v):
            raise TriqdefError(f"{where}: column {column} is {v.dtype}, expected numbers")
        if kind == "str" and (v.isna().any() or pd.api.types.is_numeric_dtype(v)):
            raise TriqdefError(f"{where}: column {column} must hold names (strings), found {v.dtype}")
    out = out.astype({"measure": str, "model": str, "view": str, "item": "int64", "value": "float64"})
    if out.duplicated(list(KEY)).any():
        raise TriqdefError(f"{where}: a (measure, model, view, item) appears twice: expected one value per item")
    return out


def write(frame, path: str | Path, info: dict | None = None) -> Path:
    """Validate ``frame`` and write it to ``path`` (Parquet) atomically; nothing is written if it is invalid.
    ``info``: what the rows do not say, as JSON in the file's metadata (:func:`read_info`)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from triqdef.meta import atomic_path

    path = Path(path)
    table = pa.Table.from_pandas(validate(frame, f"measurement store {path}"), preserve_index=False)
    extra = {b"triqdef.measures": b"1", b"triqdef.info": json.dumps(info or {}, sort_keys=True).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read(path: str | Path) -> pd.DataFrame:
    """The store at ``path``, validated; a missing or unreadable file ends with one TriqdefError line."""
    from triqdef.eval.outcome_store import read_parquet

    frame = read_parquet(path, "measurement store", "run the stage that measures it", "a Parquet file")
    return validate(frame, f"measurement store {path}")


def read_info(path: str | Path) -> dict:
    """The ``info`` a store was written with; {} when it has none."""
    from triqdef.eval.outcome_store import read_parquet_info

    return read_parquet_info(path, read)


def values(frame: pd.DataFrame, measure: str, model: str, view: str = "") -> pd.Series:
    """The values of one (measure, model, view), indexed by item; none ends with one TriqdefError line."""
    rows = frame[(frame["measure"] == measure) & (frame["model"] == model) & (frame["view"] == view)]
    if rows.empty:
        raise TriqdefError(f"measurement store has no {measure} of {model}" + (f" at {view}" if view else "")
                           + ": expected the stage that measures it to have written it")
    return rows.set_index("item")["value"].sort_index()


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def mean_interval(v: pd.Series, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``v`` and its ``level`` (95 %) percentile bootstrap interval over items."""
    if not 0 < level < 1:
        raise TriqdefError(f"interval level {level!r}: expected a coverage level in (0, 1), e.g. 0.95")
    x = v.to_numpy(float)
    reps = x[_draws(len(x), n_boot, seed)].mean(1)
    tail = 100 * (1 - level) / 2
    return float(x.mean()), float(np.percentile(reps, tail)), float(np.percentile(reps, 100 - tail))


def paired_mean_difference(a: pd.Series, b: pd.Series, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float, float, int]:
    """``mean(a − b)`` over the items both have, with its ``level`` percentile bootstrap interval (the same items
    drawn for both), and the number of common items; none in common ends with one TriqdefError line."""
    items = a.index.intersection(b.index)
    if items.empty:
        raise TriqdefError("paired difference of measurements with no item in common: expected the same test images")
    mean, low, high = mean_interval(a.loc[items] - b.loc[items], n_boot, seed, level)
    return mean, low, high, int(len(items))


def side_verdict(low: float, high: float, claim: str, margin: float) -> str:
    """*holds* / *does not hold* / *inconclusive at this sample size* of an interval against ``margin`` (``claim``:
    ``"lower"`` or ``"higher"``), as :func:`triqdef.eval.intervals.verdict` reads a rate's."""
    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE

    if claim not in ("lower", "higher"):
        raise TriqdefError(f"claim {claim!r}: expected 'lower' or 'higher'")
    below, above = high < margin, low > margin
    if (claim == "lower" and below) or (claim == "higher" and above):
        return HOLDS
    return FAILS if (below or above) else INCONCLUSIVE


def every_item_claim(intervals: dict, claim: str, margin: float, level: float = 0.95) -> str:
    """A claim that must hold for every one of ``k`` means (``intervals``: name -> the callable ``level -> (low,
    high)``): *holds* when each ``level`` interval is on the claimed side (intersection-union, no correction), *does
    not hold* when one Bonferroni interval (level 1 − (1 − ``level``)/k) is on the other side, else inconclusive
    (also when there is no interval)."""
    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE

    if not intervals:   # nothing measured decides nothing
        return INCONCLUSIVE
    k = len(intervals)
    if all(side_verdict(*ci(level), claim, margin) == HOLDS for ci in intervals.values()):
        return HOLDS
    strict = 1 - (1 - level) / k
    if any(side_verdict(*ci(strict), claim, margin) == FAILS for ci in intervals.values()):
        return FAILS
    return INCONCLUSIVE
