"""The patch sets every method is evaluated on (docs/design.md#patch-sets), made once by a DVC stage.

* ``pool``: LAVAN and GAP 6×6 patches made on the FP model, targets balanced
  over the classes, optimised and placed inside the training region (the
  image minus a ``border``-pixel frame). TriQDef trains on these.
* ``seen``: new patches from the pool's distribution with other seeds (never
  the training patches themselves).
* unseen, each its own set: ``unseen_bits4`` / ``unseen_bits2`` (made on the
  standard-QAT model at 4 / 2 bits), ``unseen_size8`` / ``unseen_size10``
  (8×8 and 10×10, made on the FP model), ``unseen_location`` (optimised over
  the whole image and placed so that it overlaps the border frame).
* ``extra_sizes`` only name sizes: Table 9's CIFAR analogue (8, 9 and 10
  pixels, scaled in the matched regime) makes its own sets in stage
  ``motivation`` (docs/design.md#table-9-sets); no ``size<s>`` set is made here.
* every set again at the matched size (``<set>_matched``, sizes scaled by the
  same factor; docs/design.md#attack-regime), when the ``attack_strength``
  stage found one that differs from ``size``. The seen and unseen sets are
  made only in the regimes whose tables are evaluated (``evaluated``: with
  ``regimes.evaluate: deciding``, the deciding one); the pool in both (the
  defenses train on both sizes).

The attacker's images are a seeded subset of the training split, disjoint
from the held-out split used for calibration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from triqdef.attacks.patches import Patch, outside_region_location
from triqdef.attacks.universal import PatchOptimiser, PatchRequest, optimise_patches, recipe
from triqdef.config import CIFAR_IMAGE_SIZE, PatchParams
from triqdef.meta import atomic_path, read_torch_file

PATCHSET_FORMAT = "triqdef-patches/1"


#: The two attack regimes: the paper's patch size, and the matched size (docs/design.md#attack-regime).
PAPER, MATCHED = "paper", "matched"
REGIMES = (PAPER, MATCHED)


def regime_set(name: str, regime: str) -> str:
    """A set's name in a regime: ``seen`` in the paper's regime, ``seen_matched`` at the matched size."""
    return name if regime == PAPER else f"{name}_{regime}"


def base_set(name: str) -> str:
    """The set a regime's set name stands for (``seen_matched`` -> ``seen``)."""
    return name[: -len(MATCHED) - 1] if name.endswith("_" + MATCHED) else name


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
    regime: str = PAPER


def balanced_targets(n: int, seed: int, num_classes: int = 10) -> list[int]:
    """``n`` target classes, each class ⌊n/C⌋ or ⌈n/C⌉ times: whole rounds of seeded random permutations of
    the classes, the last round cut. Every target is uniform over the classes, whatever ``n``; sets of a
    multiple of C patches cover every class equally often."""
    rng = np.random.default_rng([seed, 1_013])
    out: list[int] = []
    while len(out) < n:
        out += [int(c) for c in rng.permutation(num_classes)]
    return out[:n]


def largest_size(cfg: PatchParams, image_size: int = CIFAR_IMAGE_SIZE) -> int:
    """The largest patch every attack of ``cfg`` can place inside the region (GAP: its canvas twice the patch)."""
    limit = image_size - 2 * cfg.border
    return min(limit, image_size // 2) if "gap" in cfg.attacks else limit


def regime_sizes(cfg: PatchParams, second: int | None) -> dict[str, dict]:
    """Per regime, the patch sizes of its sets: ``size`` (pool, seen, unseen bits and location), ``unseen`` (the
    unseen-size sets, by their paper-regime name) and ``extra`` (Table 9's sizes). The paper's regime is
    ``patches``; the matched regime (when ``second`` is given and differs) scales every size by
    ``second / size`` (rounded) and keeps them like for like (issue 30, item 3): no two sets share a size, and
    each of them stays larger than the matched seen size. Where scaling passes :func:`largest_size` (GAP's canvas
    is twice the patch), the sizes are taken one pixel apart downwards from the largest one, in the paper's order
    (8, 9, 10 → 16, 18, 20 → 14, 15, 16 at 12 px on CIFAR-10); when they do not fit between the matched size and
    the largest, a one-line error names the parameters."""
    out = {PAPER: {"size": cfg.size, "unseen": {f"unseen_size{s}": s for s in cfg.unseen_sizes},
                   "extra": {f"size{s}": s for s in cfg.extra_sizes}}}
    if second is not None and second != cfg.size:
        sizes = distinct_scaled_sizes(sorted({*cfg.unseen_sizes, *cfg.extra_sizes}), cfg.size, second,
                                      largest_size(cfg))
        out[MATCHED] = {"size": second, "unseen": {f"unseen_size{s}": sizes[s] for s in cfg.unseen_sizes},
                        "extra": {f"size{s}": sizes[s] for s in cfg.extra_sizes}}
    return out


def distinct_scaled_sizes(sizes: list[int], size: int, second: int, top: int) -> dict[int, int]:
    """Each of ``sizes`` (patch sizes of the paper's regime, none equal to ``size``) scaled by ``second / size``,
    at most ``top``, all distinct, and on the same side of ``second`` as the paper's size is of ``size``: the
    larger ones are lowered one pixel at a time from the largest, the smaller ones raised from the smallest."""
    from triqdef.errors import TriqdefError

    out: dict[int, int] = {}
    larger = sorted((s for s in sizes if s > size), reverse=True)
    smaller = sorted(s for s in sizes if s < size)
    ceiling = top + 1
    for s in larger:
        ceiling = min(ceiling - 1, max(1, round(s * second / size)))
        out[s] = ceiling
    floor = 0
    for s in smaller:
        floor = max(floor + 1, min(top, max(1, round(s * second / size))))
        out[s] = floor
    clash = [s for s in larger if out[s] <= second] + [s for s in smaller if out[s] >= second]
    if clash or size in sizes:
        raise TriqdefError(
            f"parameters patches.unseen_sizes / extra_sizes {sizes} at the matched size {second} px "
            f"(paper size {size}, largest placeable {top}): expected {len(larger)} distinct sizes between "
            f"{second + 1} and {top} (and {len(smaller)} below {second}); use fewer or smaller sizes")
    return out


def plan(cfg: PatchParams, seed: int, num_classes: int = 10, second_size: int | None = None,
         evaluated: tuple[str, ...] = REGIMES) -> list[PatchSpec]:
    """The list of patches a ``patches`` params section asks for (deterministic in ``seed``), in the paper's
    regime and, when ``second_size`` is given, again at that size (set names ``<set>_matched``); the seen and
    unseen sets only in ``evaluated`` (the regimes whose tables are evaluated: :func:`evaluated_regimes`), the
    pool in every regime.

    Targets (docs/design.md#targets-seeds-and-placement): the pool, the seen set and the unseen group (its kinds
    together) each draw :func:`balanced_targets` with their own seed, so every patch's target is uniform over the
    classes in every set and a set of 10·j patches holds each class j times; the unseen kinds split one balanced
    draw in turn, so each kind holds distinct classes. Every patch has its own seed, by its place in the full plan:
    leaving a regime's seen and unseen sets out (or, as since issue 30, the ``size<s>`` sets of ``extra_sizes``,
    whose draws and places are still counted) changes no other patch's target or seed.
    """
    n_pool, n_seen, n_unseen = cfg.pool_per_attack, cfg.seen_per_attack, cfg.unseen_per_kind
    specs: list[PatchSpec] = []
    draw = place = 0

    def targets(n: int) -> list[int]:
        nonlocal draw
        draw += 1
        return balanced_targets(n, seed * 1_000 + draw, num_classes)

    def add(set_name, attack, chosen, size_, source, bits, placement, regime, made=True):
        nonlocal place
        for target in chosen:
            if made:
                specs.append(PatchSpec(regime_set(set_name, regime), attack, size_, source, bits, target,
                                       seed * 100_003 + place, placement, regime))
            place += 1

    for regime, sizes in regime_sizes(cfg, second_size).items():
        size, made = sizes["size"], regime in evaluated
        for attack in cfg.attacks:
            add("pool", attack, targets(n_pool), size, "fp", None, "inside", regime)
            add("seen", attack, targets(n_seen), size, "fp", None, "inside", regime, made)
            kinds = ([(f"unseen_bits{b}", size, "qat", b, "inside") for b in cfg.unseen_bits]
                     + [(name, s, "fp", None, "inside") for name, s in sizes["unseen"].items()]
                     + [("unseen_location", size, "fp", None, "outside")])
            unseen = targets(n_unseen * len(kinds))
            for i, (name, size_, source, bits, placement) in enumerate(kinds):
                add(name, attack, unseen[i * n_unseen:(i + 1) * n_unseen], size_, source, bits, placement, regime,
                    made)
            if attack == "lavan":  # the former size<s> sets: Table 9 makes its own (stage motivation)
                for name, s in sizes["extra"].items():
                    add(name, attack, targets(n_unseen), s, "fp", None, "inside", regime, made=False)
    return specs


def evaluated_regimes(evaluate: str, second_size: int | None, size: int) -> tuple[str, ...]:
    """The regimes whose seen and unseen sets stage ``patches`` makes: both with ``regimes.evaluate: both``, else
    only the deciding one (the matched size when it differs from the paper's ``size``, else the paper's)."""
    matched = second_size is not None and second_size != size
    if evaluate == "both":
        return REGIMES if matched else (PAPER,)
    return (MATCHED,) if matched else (PAPER,)


def attack_images(splits, cfg: PatchParams, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attacker's images: a seeded subset of ``patches.attack_images`` training images (disjoint from the
    held-out split). Returns images (uint8), labels and their indices in the training split."""
    n_train = len(splits.train.labels)
    rng = np.random.default_rng([seed, 7])
    idx = torch.from_numpy(rng.choice(n_train, size=min(cfg.attack_images, n_train), replace=False))
    return splits.train.images[idx], splits.train.labels[idx], idx


def optimiser(cfg: PatchParams, attack: str, steps: int | None = None) -> PatchOptimiser:
    """The patch optimiser of ``attack`` with the settings of the ``patches`` section (``steps`` overrides)."""
    return recipe(attack, loss=cfg.loss[attack], method=cfg.method, steps=steps or cfg.steps, step_size=cfg.step_size,
                  images_per_patch=cfg.images_per_patch, restarts=cfg.restarts, max_batch=cfg.max_batch)


def make_patches(specs: list[PatchSpec], models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                 cfg: PatchParams, model_name: str, progress: bool = True) -> tuple[list[Patch], list[float]]:
    """Run the attacks of ``specs``; ``models`` maps ``fp`` / ``qat`` to the source models.

    The patches that share an attack, source, size and placement are optimised together
    (:func:`triqdef.attacks.universal.optimise_patches`). Returns the patches in the order of ``specs`` and
    the seconds each took (its group's time shared evenly)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.attack, spec.source, spec.source_bits, spec.size, spec.placement), []).append(i)
    patches: list[Patch | None] = [None] * len(specs)
    seconds = [0.0] * len(specs)
    for n, ((attack, source, bits, size, placement), members) in enumerate(groups.items(), 1):
        t0 = time.perf_counter()
        requests = []
        for i in members:
            spec = specs[i]
            location = None
            if placement == "outside":
                location = outside_region_location(size, torch.Generator().manual_seed(spec.seed), x.shape[-1], cfg.border)
            requests.append(PatchRequest(spec.target, spec.seed, cfg.border if placement == "inside" else 0, location))
        label = f"patches {n}/{len(groups)}: {attack} {size}px on {source}{'' if bits is None else f' {bits}-bit'} ×{len(members)}"
        made = optimise_patches(models[source], x, labels, size, requests, optimiser(cfg, attack), bits=bits,
                                source_model=model_name, progress=label if progress else None)
        share = (time.perf_counter() - t0) / len(members)
        for i, patch in zip(members, made):
            patch.info.update(set=specs[i].set_name, source=source, placement=placement, regime=specs[i].regime)
            patches[i], seconds[i] = patch, share
    return patches, seconds


def save_patchset(path, patches: list[Patch], meta: dict) -> None:
    """Write all patches (and their provenance) to one file, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": PATCHSET_FORMAT, "meta": meta, "patches": [p.to_dict() for p in patches]}, tmp)


def regime_patch_file(folder, regime: str):
    """``<folder>/patches[_matched].pt``: where a stage keeps its own patch set of ``regime`` (Tables 2 and 9)."""
    from pathlib import Path

    return Path(folder) / f"{regime_set('patches', regime)}.pt"


def make_and_save(specs: list[PatchSpec], models: dict[str, nn.Module], splits, cfg: PatchParams, seed: int,
                  model_name: str, path, meta: dict, progress: bool = True) -> tuple[list[Patch], float]:
    """A stage's own patch set: ``specs`` made on ``models`` (:func:`make_patches`) from stage ``patches``'
    attacker images (:func:`attack_images`), saved at ``path`` with ``meta`` plus the attacker-image count and the
    seconds taken. Returns the patches and those seconds."""
    t0 = time.perf_counter()
    images, labels, idx = attack_images(splits, cfg, seed)
    patches, _ = make_patches(specs, models, images, labels, cfg, model_name, progress)
    seconds = round(time.perf_counter() - t0, 1)
    save_patchset(path, patches, dict(meta, attack_images=int(len(idx)), seconds=seconds))
    return patches, seconds


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
