"""One outcome store per evaluation: every (patch, image) outcome as one row of a Parquet file (issue 29, item 1;
docs/design.md#outcome-stores).

A row says which model (and training seed) was attacked at which view bit-width, by which patch (attack, set,
patch id, target, location), on which test image (id, label), and what the model predicted without and with the
patch. Rates, intervals and comparisons are functions of these rows, so a new comparison needs no new attack run:

- :func:`outcomes` turns a selection into the (patches × images) :class:`~triqdef.eval.intervals.Outcomes` of a
  rate, every patch on its own eligible images (clean-correct, label ≠ target: docs/design.md#success-rate);
- :func:`paired` turns two selections (two models, sets or bit-widths) into two ``Outcomes`` on *common* images:
  patches paired by target (and training seed), each pair on the images eligible for both sides (issue 29, item 2),
  with the number of common images per target.

The files are written atomically (a temporary sibling, then a rename); a store with a missing column, a wrong type
or an unreadable file is refused with one :class:`TriqdefError` line that names it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import Outcomes

SCHEMA_VERSION = "1"


class NoCommonImages(TriqdefError):
    """A comparison whose sides share no eligible image (one line, as every TriqdefError)."""

#: column -> kind: "str" (model, attack, set names) or "int"
COLUMNS: dict[str, str] = {
    "model": "str",          # the attacked model (e.g. "triqdef", "qat", "fp")
    "seed": "int",           # its training seed
    "bits": "int",           # the view's bit-width (32: full precision)
    "attack": "str",         # lavan | gap | dpr | patch_attack | noise ...
    "set": "str",            # the patch set (seen, unseen_arch, whitebox, ...)
    "patch_id": "int",       # the patch's index in its set
    "target": "int",         # its target class
    "loc_y": "int",          # its top-left corner on the image
    "loc_x": "int",
    "image_id": "int",       # index into the prepared test split
    "label": "int",          # the image's true class
    "clean_pred": "int",     # the model's prediction without the patch
    "patched_pred": "int",   # ... and with it
}
SELECTORS = ("model", "seed", "bits", "attack", "set")


def _pd():
    import pandas as pd

    return pd


def validate(frame, where: str = "outcome store"):
    """The frame with the store's columns in order and types checked; a one-line TriqdefError naming ``where``."""
    pd = _pd()
    if not isinstance(frame, pd.DataFrame):
        raise TriqdefError(f"{where}: expected a table of outcomes, got {type(frame).__name__}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TriqdefError(f"{where} lacks column(s) {', '.join(missing)}: expected {', '.join(COLUMNS)}")
    out = frame[list(COLUMNS)].copy()
    for column, kind in COLUMNS.items():
        values = out[column]
        if kind == "int":
            if not pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
                raise TriqdefError(f"{where}: column {column} is {values.dtype}, expected integers")
            out[column] = values.astype("int64")
        elif not (pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)
                  or isinstance(values.dtype, pd.CategoricalDtype)) or values.isna().any():
            raise TriqdefError(f"{where}: column {column} must hold names (strings), found {values.dtype}")
        else:
            out[column] = values.astype(str)
    key = ["model", "seed", "bits", "attack", "set", "patch_id", "image_id"]
    if out.duplicated(key).any():
        raise TriqdefError(f"{where}: {int(out.duplicated(key).sum())} row(s) repeat a (model, seed, bits, attack, "
                           "set, patch_id, image_id): expected one outcome per patch and image")
    return out.reset_index(drop=True)


def empty():
    """A store with no row (every column typed): what a stage writes for a regime it did not make."""
    pd = _pd()
    return pd.DataFrame({c: pd.Series(dtype="int64" if kind == "int" else object) for c, kind in COLUMNS.items()})


def write(frame, path: str | Path, info: dict | None = None) -> Path:
    """Validate ``frame`` and write it to ``path`` (Parquet) atomically; nothing is written if it is invalid.
    ``info``: what the rows do not say but a reader needs (e.g. the regime and patch size), as JSON in the file's
    metadata (:func:`read_info`)."""
    import json

    path = Path(path)
    frame = validate(frame, f"outcome store {path}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {b"triqdef.outcomes": SCHEMA_VERSION.encode()}
    if info:
        extra[b"triqdef.info"] = json.dumps(info, sort_keys=True).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 is not what a results file should be
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_parquet(path: str | Path, kind: str, missing: str, expected: str):
    """The Parquet file at ``path`` as a pandas DataFrame (a store of this package: ``kind`` names it in errors);
    a missing file ends with one TriqdefError line saying ``missing``, an unreadable one with one saying
    ``expected``. Shared by the outcome and the measurement stores."""
    path = Path(path)
    if not path.is_file():
        raise TriqdefError(f"{kind} {path} not found: {missing}")
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several kinds for a truncated or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TriqdefError(f"{kind} {path} is unreadable ({first}): expected {expected}") from None


def read_parquet_info(path: str | Path, reader) -> dict:
    """The ``info`` a store was written with (its schema's ``triqdef.info``); {} when it has none. A missing or
    unreadable file ends with ``reader(path)``'s one-line error."""
    import json

    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(Path(path)).metadata or {}
    except Exception:
        reader(path)
        raise
    raw = meta.get(b"triqdef.info")
    return json.loads(raw) if raw else {}


def read(path: str | Path):
    """The store at ``path`` as a validated pandas DataFrame; a missing or unreadable file, or one without the
    store's columns, ends with one TriqdefError line."""
    frame = read_parquet(path, "outcome store", "run the stage that evaluates those patches",
                         "a Parquet file of outcomes")
    return validate(frame, f"outcome store {path}")


def read_info(path: str | Path) -> dict:
    """The ``info`` a store was written with (:func:`write`); {} when it has none."""
    return read_parquet_info(path, read)


def select(frame, **where):
    """The rows whose selectors (model, seed, bits, attack, set) equal the given values; a list or tuple of values
    selects any of them (e.g. ``set=["unseen_bits4", "unseen_bits2"]``: a group of sets)."""
    unknown = [k for k in where if k not in SELECTORS]
    if unknown:
        raise TriqdefError(f"outcome selection by {', '.join(unknown)}: expected any of {', '.join(SELECTORS)}")
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        if isinstance(value, (list, tuple)):
            mask &= frame[key].isin(list(value)).to_numpy()
        else:
            mask &= (frame[key] == value).to_numpy()
    return frame[mask]


def parse_selection(text: str, name: str = "selection") -> dict:
    """``"model=TriQDef,set=seen|noise,bits=4"`` as a selection for :func:`select` (integers for seed and bits,
    a list where '|' separates several values); a malformed one ends with one TriqdefError line naming ``name``."""
    where: dict = {}
    for part in (p for p in str(text).split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SELECTORS or not value.strip():
            raise TriqdefError(f"{name} {text!r}: expected key=value pairs of {', '.join(SELECTORS)}, comma-separated")
        values = [v.strip() for v in value.split("|")]
        if COLUMNS[key] == "int":
            if not all(v.lstrip("-").isdigit() for v in values):
                raise TriqdefError(f"{name} {text!r}: {key} must be an integer")
            values = [int(v) for v in values]
        where[key] = values if len(values) > 1 else values[0]
    if not where:
        raise TriqdefError(f"{name} is empty: expected key=value pairs of {', '.join(SELECTORS)}")
    return where


def _describe(where: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items()) or "all rows"


#: What names one patch in a selection (a group of sets may reuse a patch id and a target in each set).
PATCH_KEY = ("seed", "set", "target", "patch_id")


def _patch_keys(rows) -> list[tuple]:
    return list(zip(*(rows[c] for c in PATCH_KEY)))


def _matrix(rows, patch_keys: list[tuple], images: np.ndarray):
    """(hits, eligible) of ``rows`` as (patches × images) booleans, patches (:data:`PATCH_KEY` tuples) in
    ``patch_keys`` order."""
    hits = np.zeros((len(patch_keys), len(images)), dtype=bool)
    eligible = np.zeros_like(hits)
    col = {int(i): j for j, i in enumerate(images)}
    row = {k: i for i, k in enumerate(patch_keys)}
    keys = _patch_keys(rows)
    r = np.fromiter((row.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    c = rows["image_id"].map(col).fillna(-1).to_numpy(dtype=np.int64)
    keep = (r >= 0) & (c >= 0)
    r, c = r[keep], c[keep]
    target = rows["target"].to_numpy()[keep]
    label, clean, patched = (rows[k].to_numpy()[keep] for k in ("label", "clean_pred", "patched_pred"))
    hits[r, c] = patched == target
    eligible[r, c] = (clean == label) & (label != target)
    return hits, eligible


def outcomes(frame, **where) -> Outcomes:
    """The targeted-ASR outcomes of one selection: a row per patch (ordered by training seed, set, target, patch id),
    a column per test image; each patch on its own eligible images (a table's single rate)."""
    rows = select(frame, **where)
    if rows.empty:
        raise TriqdefError(f"no outcomes for {_describe(where)}: expected rows in the store for that selection")
    keys = sorted(set(_patch_keys(rows)))
    images = np.sort(rows["image_id"].unique())
    return Outcomes(*_matrix(rows, keys, images))


def robust_outcomes(frame, **where) -> Outcomes:
    """Robust accuracy of one selection (Tables 6 and 13's "Adv"): per patch and test image, whether the patched
    prediction is the true class, every image counted (not only the eligible ones); rows ordered as
    :func:`outcomes`'."""
    rows = select(frame, **where)
    if rows.empty:
        raise TriqdefError(f"no outcomes for {_describe(where)}: expected rows in the store for that selection")
    keys = sorted(set(_patch_keys(rows)))
    images = np.sort(rows["image_id"].unique())
    correct = np.zeros((len(keys), len(images)), dtype=bool)
    row = {k: i for i, k in enumerate(keys)}
    col = {int(i): j for j, i in enumerate(images)}
    r = np.fromiter((row[k] for k in _patch_keys(rows)), dtype=np.int64, count=len(rows))
    c = rows["image_id"].map(col).to_numpy(dtype=np.int64)
    correct[r, c] = rows["patched_pred"].to_numpy() == rows["label"].to_numpy()
    return Outcomes(correct, np.ones_like(correct))


@dataclass(frozen=True)
class Paired:
    """Two selections on common images: ``a`` and ``b`` (same patch rows, paired by training seed and target;
    same image columns), each (patch, image) eligible only where it is for both sides, and the number of common
    eligible images of each target."""

    a: Outcomes
    b: Outcomes
    common_per_target: dict[int, int]

    @property
    def n_common(self) -> int:
        """The images eligible for both sides under at least one patch."""
        return int((self.a.eligible.any(0)).sum())


#: How :func:`aligned` pairs the patches of two selections: by target (each side made its own patches, one per
#: class, e.g. each model's white-box patches) or as the very same patches (one patch set on two models).
BY_TARGET, SAME_PATCHES = ("seed", "target"), ("seed", "set", "patch_id")


def paired(frame, a: dict, b: dict, frame_b=None, pair_by: tuple[str, ...] = BY_TARGET) -> Paired:
    """Outcomes of selections ``a`` and ``b`` (of ``frame``, or ``b`` of ``frame_b``) on common images (issue 29,
    item 2). Patches are paired by ``pair_by``: by (training seed, target) by default, each side holding one patch
    per pair (sets made one per class), or :data:`SAME_PATCHES`. A pair is evaluated only on the images that are
    eligible on both sides (clean-correct for both models, label ≠ target); no common image at all is an error."""
    (out_a, out_b), per_target = aligned([frame, frame if frame_b is None else frame_b], [a, b], pair_by)
    return Paired(out_a, out_b, per_target)


def aligned(frames, selections: list[dict], pair_by: tuple[str, ...] = BY_TARGET) -> tuple[list[Outcomes], dict[int, int]]:
    """:func:`paired` for any number of selections (``frames[i]`` holds ``selections[i]``): every selection's
    outcomes on the same patch rows, paired by ``pair_by`` (columns of :data:`PATCH_KEY`), and the same image
    columns, each (patch, image) eligible only where it is for every selection; and the number of common eligible
    images per target. Used where a comparison involves more than two views, e.g. a ratio of two rates compared
    between two models (:mod:`triqdef.eval.cross_bit`)."""
    unknown = [c for c in pair_by if c not in PATCH_KEY]
    if unknown or not pair_by:
        raise TriqdefError(f"pairing patches by {list(pair_by)}: expected columns of {', '.join(PATCH_KEY)}")
    rows_all, keys_all = [], []
    for frame, where in zip(frames, selections, strict=True):
        rows = select(frame, **where)
        if rows.empty:
            raise TriqdefError(f"no outcomes for {_describe(where)}: expected rows in the store for that selection")
        patches = rows.drop_duplicates(list(PATCH_KEY))
        per_pair = patches.groupby(list(pair_by)).size()
        if (per_pair > 1).any():
            raise TriqdefError(f"{_describe(where)} has several patches for ({', '.join(pair_by)}) "
                               f"{per_pair[per_pair > 1].index[0]}: expected one patch per pair")
        rows_all.append(rows)
        keys_all.append({tuple(k[PATCH_KEY.index(c)] for c in pair_by): k for k in _patch_keys(patches)})
    names = " and ".join(_describe(w) for w in selections)
    shared = sorted(set.intersection(*(set(k) for k in keys_all)))
    if not shared:
        raise TriqdefError(f"comparison between {names}: no ({', '.join(pair_by)}) in common to pair their patches")
    images = rows_all[0]["image_id"].unique()
    for rows in rows_all[1:]:
        images = np.intersect1d(images, rows["image_id"].unique())
    images = np.sort(images)
    matrices = [_matrix(rows, [keys[k] for k in shared], images) for rows, keys in zip(rows_all, keys_all)]
    both = np.logical_and.reduce([eligible for _, eligible in matrices])
    if not both.any():
        raise NoCommonImages(f"comparison between {names}: no common images (none is eligible for every side: "
                           "clean-correct on every model and view, and not of the patch's target class)")
    per_target: dict[int, int] = {}
    for key, row in zip(shared, both):
        target = int(keys_all[0][key][PATCH_KEY.index("target")])
        per_target[target] = per_target.get(target, 0) + int(row.sum())
    return [Outcomes(hits, both) for hits, _ in matrices], per_target


#: The outcome store's bit-width of DWQ's random-precision view (Table 5's column "random"): no single bit-width.
RANDOM_BITS = 0


def view_bits(view: str) -> int:
    """A records' view name as the store's bit-width: ``"4-bit"`` -> 4, ``"random"`` -> :data:`RANDOM_BITS`."""
    if view == "random":
        return RANDOM_BITS
    head = str(view).split("-bit")[0]
    if not head.isdigit():
        raise TriqdefError(f"view {view!r}: expected '<bits>-bit' or 'random' to store its outcomes")
    return int(head)


def write_records(records, seed: int, labels, path: str | Path, info: dict | None = None):
    """:func:`from_records`, then :func:`write` to ``path`` with ``info``; returns the store's rows."""
    frame = from_records(records, seed, labels)
    write(frame, path, info)
    return frame


def from_records(records, seed: int, labels, image_ids=None):
    """Outcome-store rows from the records of :func:`triqdef.eval.transfer.transfer_records` (one row per patch and
    view, with ``model``, ``patch_set``, the patch's index, target and location, and each image's clean and patched
    prediction): one row per (patch, view, image). ``labels``: the test images' classes, in the records' order;
    ``image_ids``: their ids in the prepared test split (default 0, 1, ...). ``seed``: the models' training seed."""
    pd = _pd()
    labels = np.asarray(labels)
    ids = np.arange(len(labels)) if image_ids is None else np.asarray(image_ids)
    frames = []
    for r in records.itertuples(index=False):
        frames.append(pd.DataFrame({
            "model": r.model, "seed": int(seed), "bits": view_bits(r.view), "attack": r.attack, "set": r.patch_set,
            "patch_id": int(r.patch), "target": int(r.target), "loc_y": int(r.loc_y), "loc_x": int(r.loc_x),
            "image_id": ids, "label": labels, "clean_pred": np.asarray(r.clean_pred),
            "patched_pred": np.asarray(r.patched_pred)}))
    if not frames:
        raise TriqdefError("no records to store: expected at least one patch evaluated on one view")
    return validate(pd.concat(frames, ignore_index=True), "outcome records")
