"""Evaluating the defended models: patch sets at each bit-width, random-precision inference, white-box patches.

* :class:`RandomBitWidth` wraps a switchable-precision model so that each
  forward runs at a random bit-width: per image (DWQ's random-precision
  inference, attack and inference bit-widths drawn independently; the draw
  depends only on the image's position in its batch, so clean and patched
  predictions use the same bit-width per image) or per call (the white-box
  attack's expectation over bit-widths).
* :func:`whitebox_patches`: LAVAN optimised on a defended model itself, with
  expectation over locations and over the bit-widths of B (docs/design.md#white-box-patches:
  so that gradient masking cannot pass for robustness).
* :func:`defense_records`: one record per (model, patch, view) with ASR,
  fooling rate and their image counts (:func:`triqdef.eval.transfer.transfer_records`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef import quant
from triqdef.attacks.patches import Patch
from triqdef.attacks.patchsets import balanced_targets, optimiser, regime_set
from triqdef.attacks.universal import PatchRequest, optimise_patches
from triqdef.config import PatchParams
from triqdef.eval.intervals import Outcomes
from triqdef.eval.transfer import add_intervals, patch_counts, transfer_records, view_predictions

UNSEEN_SETS = ("unseen_bits4", "unseen_bits2", "unseen_size8", "unseen_size10", "unseen_location")


class RandomBitWidth(nn.Module):
    """A switchable-precision model whose forward runs at a random bit-width of ``bits``.

    ``per_image=True``: every image at its own random bit-width (the model runs
    at each bit-width and each image's logits are taken from its draw; the draw
    is a fixed function of the position in the batch). ``per_image=False``: one
    bit-width per call, from a running generator (for attacks).
    """

    def __init__(self, model: nn.Module, bits: Sequence[int], seed: int = 0, per_image: bool = True):
        super().__init__()
        self.model, self.bits, self.seed, self.per_image = model, [quant.check_bits(b) for b in bits], seed, per_image
        self._g = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_image:
            b = self.bits[int(torch.randint(0, len(self.bits), (1,), generator=self._g))]
            with quant.use_bitwidth(self.model, b):
                return self.model(x)
        draw = torch.randint(0, len(self.bits), (x.shape[0],), generator=torch.Generator().manual_seed(self.seed)).to(x.device)
        out = None
        for i, b in enumerate(self.bits):
            with quant.use_bitwidth(self.model, b):
                logits = self.model(x)
            out = logits if out is None else torch.where((draw == i)[:, None], logits, out)
        return out


def whitebox_patches(model: nn.Module, bits: Sequence[int], images: torch.Tensor, labels: torch.Tensor, n: int,
                     cfg: PatchParams, steps: int, seed: int, source_model: str, start: int = 0) -> list[Patch]:
    """``n`` LAVAN patches (balanced targets) optimised on ``model`` itself, together, over locations and
    ``bits`` (one random bit-width of ``bits`` per forward, drawn from ``seed``).

    ``cfg``: the ``patches`` section (size, optimiser settings, border); ``steps``: ``robustness.whitebox_steps``.
    ``start``: which starting point (content and location draws) of a restarted attack; the targets depend on
    ``seed`` only, so restarts share them.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    wrapped = RandomBitWidth(model, bits, seed=seed * 7, per_image=False)
    requests = [PatchRequest(t, seed * 100_003 + 90_000 + i + 7_919 * start, cfg.border)
                for i, t in enumerate(balanced_targets(n, seed * 1_000 + 900))]
    out = optimise_patches(wrapped, x, labels, cfg.size, requests, optimiser(cfg, "lavan", steps), bits=None,
                           source_model=source_model)
    for p in out:
        p.info.update(set="whitebox", bit_set=list(bits))
    return out


def defense_records(models: Mapping[str, nn.Module], patch_sets: Mapping[str, list[Patch]], bits: Sequence[int],
                    images: torch.Tensor, labels: torch.Tensor, random_precision: Sequence[str] = (),
                    rp_bits: Sequence[int] | None = None, seed: int = 0) -> pd.DataFrame:
    """Records of every patch set on every model at each of ``bits`` (views ``"<b>-bit"``); models named in
    ``random_precision`` get an extra view ``"random"`` (random-precision inference over ``rp_bits``)."""
    frames = []
    for name, model in models.items():
        views = {f"{b}-bit": (model, b) for b in bits}
        if name in random_precision:
            views["random"] = (RandomBitWidth(model, rp_bits or quant.model_bits(model), seed), None)
        clean = view_predictions(views, images)
        for set_name, patches in patch_sets.items():
            if patches:
                frames.append(transfer_records(patches, views, images, labels, clean).assign(model=name, patch_set=set_name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def set_group(set_name: str) -> str:
    """``seen``, ``unseen`` (every unseen set together) or ``whitebox``."""
    return "unseen" if set_name in UNSEEN_SETS else set_name


def target_coverage(patches: Sequence[Patch], groups: Mapping[str, Sequence[str]], num_classes: int = 10) -> str:
    """A caption sentence on how each group's targets spread over the classes, counted from the patches
    themselves (issue 12: the pool and every evaluation set must share one target distribution).

    ``groups``: caption label -> the set names counted together (the unseen kinds form one group, as in
    Table 5). Per attack, a group is "even" when every class is the target equally often.
    """
    parts, even = [], True
    for label, names in groups.items():
        chosen = [p for p in patches if p.info.get("set") in set(names)]
        if not chosen:
            continue
        per_attack = []
        for attack in sorted({p.attack for p in chosen}):
            counts = np.bincount([p.target for p in chosen if p.attack == attack], minlength=num_classes)
            lo, hi = int(counts.min()), int(counts.max())
            even &= lo == hi
            spread = f"each class {lo}×" if lo == hi else f"{lo}–{hi} per class (uneven)"
            per_attack.append(f"{attack} {int(counts.sum())} ({spread})")
        parts.append(f"{label}: {', '.join(per_attack)}")
    head = (f"Patch targets (counted from the patch file): every set covers the {num_classes} classes evenly"
            if even else "Patch targets (counted from the patch file): NOT every set covers the classes evenly")
    return f"{head}; " + "; ".join(parts) + "."


def set_targets(patches: Sequence[Patch], sets: Mapping[str, str]) -> str:
    """Each named set's size and targets per attack, for captions of tables that show sets one by one
    (``sets``: caption label -> set name): ``seen 8x8 (16×16): gap 0, 2; lavan 0, 4``."""
    parts = []
    for label, name in sets.items():
        chosen = [p for p in patches if p.info.get("set") == name]
        if not chosen:
            continue
        sizes = "/".join(f"{s}×{s}" for s in sorted({p.size for p in chosen}))
        by_attack = "; ".join(f"{a} " + ", ".join(str(t) for t in sorted(p.target for p in chosen if p.attack == a))
                              for a in sorted({p.attack for p in chosen}))
        parts.append(f"{label} ({sizes}): {by_attack}")
    return "Sizes and targets per set: " + " | ".join(parts) + "."


def unseen_bits_source(patch_meta: Mapping) -> str:
    """A caption sentence on which model the unseen-bit-width patches were made on (issue 12: a standard-QAT model
    trained with another seed than the defenses' starting checkpoint, ``patches.unseen_bits_source``)."""
    source = patch_meta.get("params", {}).get("unseen_bits_source")
    path = patch_meta.get("unseen_bits_source", "?")
    if source == "independent_qat":
        return (f"The unseen-bit-width patches are made on a standard-QAT model trained with another seed ({path}), "
                "not on the defenses' starting checkpoint.")
    return (f"The unseen-bit-width patches are made on the defenses' own starting checkpoint ({path}): partly "
            "white-box for every row.")


def evaluation_sets_note(patches: Sequence[Patch], patch_meta: Mapping, regime: str) -> str:
    """The caption note of Tables 2, 5 and 7 (issue 12): the pool's, the seen set's and the unseen kinds' targets
    counted per attack (:func:`target_coverage`) and the unseen-bit-width patches' source model."""
    groups = {"training pool": [regime_set("pool", regime)], "seen": [regime_set("seen", regime)],
              "the five unseen kinds together": [regime_set(k, regime) for k in UNSEEN_SETS]}
    return f"{target_coverage(patches, groups)} {unseen_bits_source(patch_meta)}"


def asr_table(records: pd.DataFrame, by: str = "group", views: Sequence[str] | None = None, value: str = "asr") -> pd.DataFrame:
    """Paper-style Table 5: one row per (model, patch group or set), columns ``<attack> <view>``, each the mean
    over the patches of the rate with its 95 % interval (``<column> low`` / ``high``), with the mean number of
    images per rate and the number of patches."""
    n_col = {"asr": "n_asr", "fooling": "n_fooling", "asr_common": "n_common"}[value]
    rec = records.assign(group=records["patch_set"].map(set_group))
    views = list(views or dict.fromkeys(rec["view"]))
    keys = ["model", by]
    mean = rec.pivot_table(index=keys, columns=["attack", "view"], values=value, aggfunc="mean", sort=False)
    cols = [(a, v) for a in sorted(rec["attack"].unique()) for v in views if (a, v) in mean.columns]
    table = mean[cols]
    table.columns = [f"{a} {v}" for a, v in cols]
    table["n images"] = rec.groupby(keys, sort=False)[n_col].mean().round(0)
    table["patches"] = patch_counts(rec, keys)
    table = table.reset_index()
    rec = rec.assign(**{"attack view": rec["attack"] + " " + rec["view"]})
    return add_intervals(table, rec, value, keys, "attack view", [f"{a} {v}" for a, v in cols])


def robust_outcomes(records: pd.DataFrame) -> Outcomes:
    """Per-image correctness with each patch pasted (Table 13's "Adv"), every image eligible, read from the
    records of :func:`defense_records` (one row per patch, one view): a correct prediction is one that is not
    fooled, so the patches are pasted once for both the ASR and the robust-accuracy rows."""
    if records.empty:
        return Outcomes(np.zeros((0, 0), dtype=bool), np.zeros((0, 0), dtype=bool))
    correct = ~np.stack(list(records["hits_fooling"]))
    return Outcomes(correct, np.ones_like(correct))
