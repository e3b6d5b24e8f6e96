"""The repository's DVC remote (``dvc-store/``, tracked by git) against ``dvc.lock``.

``python tools/dvc_store.py --check`` lists every cached output that ``dvc.lock`` names and that ``dvc-store/``
lacks (a missing ``dvc push`` before the commit): a fresh clone's ``dvc pull`` would then leave that stage without
its output and ``dvc status`` would call it stale; the same for the files ``*.dvc`` track (``data.dvc``: the JPEG
mirror of CIFAR-10 the results were made from). Outputs with ``cache: false`` (git-tracked tables, metrics, plots)
are not stored there by design. Exit status 1 on a gap.
``--size`` prints the store's size. ``--status`` (in a fresh clone, after ``dvc pull``) runs ``dvc status`` and fails
when a stage's output is missing (a missing push); stages whose code, params or inputs changed since ``dvc.lock``
are listed as stale, and fail the check only with ``--strict``. The prepared CIFAR-10 copy (``data/cifar10``) is
built by ``triqdef data fetch``, not pulled: where it is absent, the stages that read it are not counted stale for
that reason.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "dvc-store"


def store_path(md5: str, store: Path = STORE) -> Path:
    """Where DVC 3 keeps an object of this hash in a local remote (``files/md5/ab/cdef...``; ``.dir`` manifests too)."""
    return store / "files" / "md5" / md5[:2] / md5[2:]


def locked_outputs(lock: Path = ROOT / "dvc.lock") -> list[tuple[str, str, str]]:
    """(stage, path, md5) of every output in ``dvc.lock`` that DVC caches (git-tracked ``cache: false`` outputs
    carry no entry in the cache and are left out by reading dvc.yaml's flags)."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    uncached = _uncached_paths()
    out = []
    for name, stage in stages.items():
        for o in stage.get("outs", []):
            if o["path"] not in uncached and "md5" in o:
                out.append((name, o["path"], o["md5"]))
    return out


def tracked_files(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(``.dvc`` file, path, md5) of every output a ``*.dvc`` file at the root tracks (``data.dvc``'s archive)."""
    out = []
    for dvc_file in sorted(p for p in root.glob("*.dvc") if p.is_file()):
        for o in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            if "md5" in o and o.get("push", True):
                out.append((dvc_file.name, o["path"], o["md5"]))
    return out


def _param_list(value) -> list:
    """A matrix entry: a list, or ``${a.b.c}`` naming a list in params.yaml (DVC's templating)."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        node = yaml.safe_load((ROOT / "params.yaml").read_text())
        for key in value[2:-1].split("."):
            node = node[key]
        return list(node)
    return list(value)


def _fill(path: str, item) -> str:
    """``path`` with a ``foreach`` item (``${item}``) or a ``matrix`` item (``${item.<key>}``) filled in."""
    if item is None:
        return path
    if isinstance(item, dict):
        for k, v in item.items():
            path = path.replace("${item.%s}" % k, str(v))
        return path
    return path.replace("${item}", str(item))


def _uncached_paths() -> set[str]:
    """Outputs that ``dvc.yaml`` marks ``cache: false`` (git tracks them), whatever their stage's ``foreach`` item."""
    text = (ROOT / "dvc.yaml").read_text()
    spec = yaml.safe_load(text)["stages"]
    paths = set()
    for stage in spec.values():
        body = stage.get("do", stage)
        items = stage.get("foreach", [None])
        if isinstance(stage.get("matrix"), dict):   # ${item.<key>}: one item per combination of the matrix's lists
            keys = list(stage["matrix"])
            lists = [_param_list(stage["matrix"][k]) for k in keys]
            items = [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
        for key in ("outs", "metrics", "plots"):
            for entry in body.get(key, []):
                if isinstance(entry, dict):
                    (path, flags), = entry.items()
                    if isinstance(flags, dict) and flags.get("cache") is False:
                        for item in items:
                            paths.add(_fill(path, item))
                elif key != "outs":  # metrics/plots without flags: cached by default
                    continue
    return paths


def missing(store: Path = STORE, lock: Path = ROOT / "dvc.lock") -> list[str]:
    """The cached outputs of ``dvc.lock`` (files and every file of a directory output) that ``store`` lacks."""
    gaps = []
    for stage, path, md5 in locked_outputs(lock) + tracked_files(lock.parent):
        obj = store_path(md5, store)
        if not obj.is_file():
            gaps.append(f"{stage}: {path} ({md5})")
            continue
        if md5.endswith(".dir"):
            for entry in json.loads(obj.read_text()):
                if not store_path(entry["md5"], store).is_file():
                    gaps.append(f"{stage}: {path}/{entry['relpath']} ({entry['md5']})")
    return gaps


DATA = "data/cifar10"


def pulled_status(strict: bool = False) -> int:
    """``dvc status --json`` in the current repository, after ``dvc pull``: 1 when an output is missing (or, with
    ``strict``, a stage is stale), else 0; prints what it found."""
    import subprocess

    run = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if run.returncode:
        print(f"dvc status failed: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
        return 1
    status = json.loads(run.stdout or "{}")
    missing_outs, stale = [], []
    for stage, changes in status.items():
        reasons, outs = [], []
        for change in changes:
            if not isinstance(change, dict):
                reasons.append(str(change))
                continue
            for kind, entries in change.items():
                if kind == "changed outs":
                    outs += [f"{stage}: {path} ({state})" for path, state in entries.items()]
                elif kind == "changed deps":
                    reasons += [f"{path} {state}" for path, state in entries.items() if path != DATA]
                else:
                    reasons.append(kind)
        if reasons:  # a stale stage's outputs may be missing because it has not run since: that is the staleness
            stale.append(f"{stage}: {', '.join(reasons)}" + (f" (and {len(outs)} output(s) missing)" if outs else ""))
        else:  # every input matches dvc.lock, yet an output is not there: a missing push
            missing_outs += outs
    if missing_outs:
        print("outputs missing after dvc pull (push them and commit dvc-store/):", *missing_outs, sep="\n  ")
    if stale:
        print(f"{len(stale)} stage(s) stale (their code, params or inputs changed since dvc.lock):", *stale, sep="\n  ")
    if not missing_outs and not stale:
        print("dvc status after dvc pull: every stage up to date")
    return 1 if missing_outs or (strict and stale) else 0


def size_bytes(store: Path = STORE) -> int:
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when dvc-store/ lacks an output dvc.lock names")
    ap.add_argument("--size", action="store_true", help="print the store's size")
    ap.add_argument("--status", action="store_true", help="after dvc pull: fail when an output is missing")
    ap.add_argument("--strict", action="store_true", help="with --status: fail on stale stages too")
    args = ap.parse_args(argv)
    if args.size:
        print(f"dvc-store/: {size_bytes() / 2**20:.1f} MiB in {sum(1 for f in STORE.rglob('*') if f.is_file())} files")
    if args.check:
        gaps = missing()
        if gaps:
            print("dvc-store/ lacks outputs that dvc.lock names (run `dvc push` and commit dvc-store/):", *gaps, sep="\n  ")
            return 1
        print(f"dvc-store/ holds all {len(locked_outputs())} cached outputs of dvc.lock and the {len(tracked_files())} file(s) of *.dvc")
    if args.status:
        return pulled_status(args.strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
