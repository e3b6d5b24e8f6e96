"""The patch sets every method is evaluated on (DESIGN "Patch sets"), made once by a DVC stage.

* ``pool``: LAVAN and GAP 6×6 patches made on the FP model, targets spread
  over the classes, optimised and placed inside the training region (the
  image minus a ``border``-pixel frame). TriQDef and PBAT train on these.
* ``seen``: new patches from the pool's distribution with other seeds (never
  the training patches themselves).
* unseen, each its own set: ``unseen_bits4`` / ``unseen_bits2`` (made on the
  standard-QAT model at 4 / 2 bits), ``unseen_size8`` / ``unseen_size10``
  (8×8 and 10×10, made on the FP model), ``unseen_location`` (optimised over
  the whole image and placed so that it overlaps the border frame).
* ``size<s>`` for each of ``extra_sizes`` (LAVAN only, FP-made): Table 9's
  CIFAR analogue uses 8, 9 and 10-pixel patches.

The attacker's images are a seeded subset of the training split, disjoint
from the held-out split used for calibration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .attacks import ATTACKS, Patch, make_attack, outside_region_location
from .config import require_positive_int
from .errors import TriqdefError
from .meta import atomic_path

PATCHSET_FORMAT = "triqdef-patches/1"


@dataclass(frozen=True)
class PatchSpec:
    """One patch to make: which set, attack, size, source (``fp`` or a QAT bit-width), target, seed, placement."""

    set_name: str
    attack: str
    size: int
    source: str  # "fp" or "qat"
    source_bits: int | None
    target: int
    seed: int
    placement: str  # "inside" | "outside"


def plan(cfg: dict, seed: int, num_classes: int = 10) -> list[PatchSpec]:
    """The list of patches a ``patches`` params section asks for (deterministic in ``seed``)."""
    attacks = cfg.get("attacks", list(ATTACKS))
    for a in attacks:
        if a not in ATTACKS:
            raise TriqdefError(f"parameter patches.attacks has {a!r}: expected some of {', '.join(ATTACKS)}")
    n_pool = require_positive_int(cfg["pool_per_attack"], "patches.pool_per_attack")
    n_seen = require_positive_int(cfg["seen_per_attack"], "patches.seen_per_attack")
    n_unseen = require_positive_int(cfg["unseen_per_kind"], "patches.unseen_per_kind")
    size = require_positive_int(cfg.get("size", 6), "patches.size")
    specs: list[PatchSpec] = []
    counter = 0

    def add(set_name, attack, n, size_, source, bits, placement):
        nonlocal counter
        for i in range(n):
            # targets cycle through the classes, offset per set so sets do not share (target, seed)
            target = (counter * 3 + i) % num_classes
            specs.append(PatchSpec(set_name, attack, size_, source, bits, target, seed * 100_003 + counter, placement))
            counter += 1

    for attack in attacks:
        add("pool", attack, n_pool, size, "fp", None, "inside")
        add("seen", attack, n_seen, size, "fp", None, "inside")
        for b in cfg.get("unseen_bits", [4, 2]):
            add(f"unseen_bits{b}", attack, n_unseen, size, "qat", b, "inside")
        for s in cfg.get("unseen_sizes", [8, 10]):
            add(f"unseen_size{s}", attack, n_unseen, s, "fp", None, "inside")
        add("unseen_location", attack, n_unseen, size, "fp", None, "outside")
        if attack == "lavan":  # Table 9 (CIFAR analogue) also needs LAVAN patches of these sizes
            for s in cfg.get("extra_sizes", []):
                add(f"size{s}", attack, n_unseen, s, "fp", None, "inside")
    return specs


def make_patches(specs: list[PatchSpec], models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                 cfg: dict, model_name: str, progress: bool = True) -> tuple[list[Patch], list[float]]:
    """Run the attacks of ``specs``; ``models`` maps ``fp`` / ``qat`` to the source models. Returns patches and seconds each."""
    patches, seconds = [], []
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    for spec in tqdm(specs, desc="patches", disable=not progress, unit="patch"):
        t0 = time.perf_counter()
        border = cfg.get("border", 4) if spec.placement == "inside" else 0
        attack = make_attack(spec.attack, models[spec.source], bits=spec.source_bits, size=spec.size, target=spec.target,
                             steps=cfg["steps"], step_size=cfg.get("step_size", 0.05), batch_size=cfg.get("batch_size", 64),
                             border=border, seed=spec.seed, source_model=model_name)
        location = None
        if spec.placement == "outside":
            location = outside_region_location(spec.size, torch.Generator().manual_seed(spec.seed), x.shape[-1], cfg.get("border", 4))
        patch = attack(x, labels, location=location)
        patch.info.update(set=spec.set_name, source=spec.source, placement=spec.placement)
        patches.append(patch)
        seconds.append(time.perf_counter() - t0)
    return patches, seconds


def save_patchset(path, patches: list[Patch], meta: dict) -> None:
    """Write all patches (and their provenance) to one file, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": PATCHSET_FORMAT, "meta": meta, "patches": [p.to_dict() for p in patches]}, tmp)


def load_patchset(path) -> tuple[list[Patch], dict]:
    """Read a patch file written by :func:`save_patchset` (one-line errors for missing/corrupt files)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise TriqdefError(f"patch file {path} not found: expected the output of 'triqdef patches make'")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise TriqdefError(f"patch file {path} is corrupt or unreadable ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != PATCHSET_FORMAT:
        raise TriqdefError(f"patch file {path} is not a triqdef patch set: expected format {PATCHSET_FORMAT}")
    return [Patch.from_dict(d) for d in blob["patches"]], blob["meta"]


def by_set(patches: list[Patch]) -> dict[str, list[Patch]]:
    out: dict[str, list[Patch]] = {}
    for p in patches:
        out.setdefault(p.info.get("set", "?"), []).append(p)
    return out


def select(patches: list[Patch], set_name: str, attack: str | None = None, where: Callable[[Patch], bool] | None = None) -> list[Patch]:
    return [p for p in patches if p.info.get("set") == set_name and (attack is None or p.attack == attack)
            and (where is None or where(p))]


def run_make_patches(params: dict, progress: bool = True) -> dict:
    """Stage ``patches``: make every patch set from the FP and standard-QAT checkpoints; write them to
    ``results/patches/patches.pt`` and timings to ``results/metrics/patches.json``."""
    import numpy as np

    from . import paths, pipeline
    from .config import section
    from .meta import provenance, write_json
    from .train import model_from_checkpoint, resolve_device

    cfg = section(params, "patches")
    seed = params["base"]["seed"]
    specs = plan(cfg, seed)  # validate the parameters before any expensive loading
    device = resolve_device(params["base"].get("device", "auto"))
    name = pipeline.model_name(params)
    splits = pipeline.load_data(params)
    n_att = require_positive_int(cfg["attack_images"], "patches.attack_images")
    rng = np.random.default_rng([seed, 7])
    idx = torch.from_numpy(rng.choice(len(splits.train.labels), size=min(n_att, len(splits.train.labels)), replace=False))
    images, labels = splits.train.images[idx], splits.train.labels[idx]
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(params), kind="fp", model_name=name)
    qat, qat_meta = model_from_checkpoint(pipeline.qat_checkpoint(params), kind="qat", model_name=name)
    t0 = time.perf_counter()
    patches, seconds = make_patches(specs, {"fp": fp.to(device), "qat": qat.to(device)}, images, labels, cfg, name, progress)
    wall = time.perf_counter() - t0
    meta = provenance(params, {"params": cfg, "data": pipeline.data_record(splits), "attack_images": int(len(idx)),
                               "fp_checkpoint_commit": fp_meta.get("commit"), "qat_checkpoint_commit": qat_meta.get("commit")})
    save_patchset(paths.results_dir() / "patches" / "patches.pt", patches, meta)
    per_set: dict[str, dict] = {}
    for p, s in zip(patches, seconds):
        d = per_set.setdefault(p.info["set"], {"n": 0, "seconds": 0.0})
        d["n"] += 1
        d["seconds"] = round(d["seconds"] + s, 2)
    metrics = {"n_patches": len(patches), "wall_time_s": round(wall, 1), "seconds_per_patch_mean": round(wall / len(patches), 2),
               "per_set": per_set, "attack_images": int(len(idx)), "steps": cfg["steps"], "profile": params["base"]["profile"]}
    write_json(paths.metrics_dir() / "patches.json", metrics)
    return metrics
