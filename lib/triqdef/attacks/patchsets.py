"""The patch sets every method is evaluated on (docs/design.md#patch-sets), made once by a DVC stage.

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

from triqdef.attacks.patches import Patch, make_attack, outside_region_location
from triqdef.config import PatchParams
from triqdef.meta import atomic_path, read_torch_file

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


def plan(cfg: PatchParams, seed: int, num_classes: int = 10) -> list[PatchSpec]:
    """The list of patches a ``patches`` params section asks for (deterministic in ``seed``)."""
    n_pool, n_seen, n_unseen, size = cfg.pool_per_attack, cfg.seen_per_attack, cfg.unseen_per_kind, cfg.size
    specs: list[PatchSpec] = []
    counter = 0

    def add(set_name, attack, n, size_, source, bits, placement):
        nonlocal counter
        for i in range(n):
            # targets cycle through the classes, offset per set so sets do not share (target, seed)
            target = (counter * 3 + i) % num_classes
            specs.append(PatchSpec(set_name, attack, size_, source, bits, target, seed * 100_003 + counter, placement))
            counter += 1

    for attack in cfg.attacks:
        add("pool", attack, n_pool, size, "fp", None, "inside")
        add("seen", attack, n_seen, size, "fp", None, "inside")
        for b in cfg.unseen_bits:
            add(f"unseen_bits{b}", attack, n_unseen, size, "qat", b, "inside")
        for s in cfg.unseen_sizes:
            add(f"unseen_size{s}", attack, n_unseen, s, "fp", None, "inside")
        add("unseen_location", attack, n_unseen, size, "fp", None, "outside")
        if attack == "lavan":  # Table 9 (CIFAR analogue) also needs LAVAN patches of these sizes
            for s in cfg.extra_sizes:
                add(f"size{s}", attack, n_unseen, s, "fp", None, "inside")
    return specs


def make_patches(specs: list[PatchSpec], models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                 cfg: PatchParams, model_name: str, progress: bool = True) -> tuple[list[Patch], list[float]]:
    """Run the attacks of ``specs``; ``models`` maps ``fp`` / ``qat`` to the source models. Returns patches and seconds each."""
    patches, seconds = [], []
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    for spec in tqdm(specs, desc="patches", disable=not progress, unit="patch"):
        t0 = time.perf_counter()
        border = cfg.border if spec.placement == "inside" else 0
        attack = make_attack(spec.attack, models[spec.source], bits=spec.source_bits, size=spec.size, target=spec.target,
                             steps=cfg.steps, step_size=cfg.step_size, batch_size=cfg.batch_size,
                             border=border, seed=spec.seed, source_model=model_name)
        location = None
        if spec.placement == "outside":
            location = outside_region_location(spec.size, torch.Generator().manual_seed(spec.seed), x.shape[-1], cfg.border)
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
    blob = read_torch_file(path, PATCHSET_FORMAT, "patch file", "'triqdef patches make'")
    return [Patch.from_dict(d) for d in blob["patches"]], blob["meta"]


def by_set(patches: list[Patch]) -> dict[str, list[Patch]]:
    out: dict[str, list[Patch]] = {}
    for p in patches:
        out.setdefault(p.info.get("set", "?"), []).append(p)
    return out


def select(patches: list[Patch], set_name: str, attack: str | None = None, where: Callable[[Patch], bool] | None = None) -> list[Patch]:
    return [p for p in patches if p.info.get("set") == set_name and (attack is None or p.attack == attack)
            and (where is None or where(p))]
