"""Provenance and atomic writes: every result carries commit, profile, params, data source, seeds and wall time."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from triqdef.errors import TriqdefError
from triqdef.paths import project_root


def git_commit() -> str:
    """``HEAD``'s commit, suffixed ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        root = project_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "lib", "params.yaml", "dvc.yaml", "notebooks"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - provenance must never break a run
        return "unknown"


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def provenance(cfg: Any, extra: dict | None = None) -> dict[str, Any]:
    """The metadata block written beside every table, figure and checkpoint (``cfg``: a :class:`triqdef.config.Config`)."""
    out = {
        "commit": git_commit(),
        "profile": cfg.base.profile,
        "seed": cfg.base.seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    out.update(extra or {})
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON types (str for anything else), so it loads with ``torch.load(weights_only=True)``."""
    return json.loads(json.dumps(obj, default=str))


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_metrics(name: str, headline: dict[str, Any], details: dict[str, Any] | None = None,
                  results: Path | None = None) -> Path:
    """Write a stage's metrics: ``results/metrics/<name>.json`` and ``results/metadata/<name>.json``.

    The metrics file holds only the headline numbers a reader compares between
    commits (``dvc metrics show`` / ``dvc metrics diff``): accuracy per
    bit-width, the rates a table summarises, and ``stage_wall_time_s``. Every
    other record (provenance, settings, data source and sizes, per-set
    timings) goes in the metadata file beside it, which is not a DVC metric.
    ``results``: another root than ``results/`` (the replica group's ``results/replicas``).
    Returns the metrics file's path.
    """
    from triqdef import paths

    results = paths.results_dir() if results is None else Path(results)
    path = write_json(results / "metrics" / f"{name}.json", plain(headline))
    if details is not None:
        write_json(results / "metadata" / f"{name}.json", plain(details))
    return path


def write_curve(name: str, rows: list[dict[str, Any]], empty_columns: tuple[str, ...] = ("step",),
                results: Path | None = None) -> Path:
    """Write a per-step curve (a training run's logged history) to ``results/plots/<name>.csv``.

    One row per step, one column per logged value (first-seen order; empty
    where a step did not log that value), so ``dvc plots show`` draws it
    (``plots:`` in ``dvc.yaml``: ``x: step``); no rows: a header of ``empty_columns``. Returns the file's path.
    """
    import csv
    import io

    from triqdef import paths

    columns = list(dict.fromkeys(k for row in rows for k in row)) or list(empty_columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text((paths.results_dir() if results is None else Path(results)) / "plots" / f"{name}.csv",
                      buf.getvalue())


def read_torch_file(path: str | Path, fmt: str, what: str, written_by: str) -> dict:
    """Load a file written by ``torch.save`` (a dict whose ``"format"`` is ``fmt``) on the CPU, weights only.

    A missing, corrupt or foreign file is a one-line error that names ``what`` the file should be (e.g.
    ``"checkpoint"``) and ``written_by``, the command that writes it (e.g. ``"'triqdef train'"``).
    """
    path = Path(path)
    if not path.is_file():
        raise TriqdefError(f"{what} {path} not found: expected the output of {written_by}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise TriqdefError(f"{what} {path} is corrupt or unreadable ({reason}): expected a triqdef {what}") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise TriqdefError(f"{what} {path} is not a triqdef {what}: expected format {fmt}")
    return blob
