"""Cross-bit-width alignment of feature maps and input gradients (paper section 2, Table 3, Table 12, Figure 2).

A *view* is a model evaluated at one bit-width: ``(model, bits)`` with
``bits=None`` for a float model. For a batch of images each view yields

* feature maps at the FDP tap layers (post-ReLU output of ``conv1`` in the
  first block of each stage, DESIGN "Losses"), reduced to one normalised map
  per sample (channel mean, per-sample min-max);
* input gradients of the cross-entropy, reduced the same way (channel mean
  of ``|g|``).

Pairs of views are then compared with plain cosine, Edge IoU, SoftDice of
soft edges, HOG cosine and SoftHOG cosine, each beside its chance baseline:
the same metric between maps of *different* images (a derangement).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import perceptual as P
from . import quant
from .errors import TriqdefError

#: FDP tap layers per architecture (module paths; DESIGN "Losses").
TAPS = {
    "resnet20": ["layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"],
    "resnet56": ["layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"],
}
#: Names the paper's Table 12 uses for them.
TAP_LABELS = {"layer1.0.relu1": "L0.conv1", "layer2.0.relu1": "L1.conv1", "layer3.0.relu1": "L2.conv1"}

METRICS = {
    "cosine": lambda a, b: P.cosine_similarity_maps(a, b),
    "edge_iou": lambda a, b: P.edge_iou(a, b),
    "soft_dice": lambda a, b: P.soft_edge_dice(a, b),
    "hog_cosine": lambda a, b: P.hog_cosine(a, b, soft=False),
    "soft_hog_cosine": lambda a, b: P.hog_cosine(a, b, soft=True),
}


def _ctx(model: nn.Module, bits: int | None):
    return quant.use_bitwidth(model, bits) if bits is not None else contextlib.nullcontext()


def taps_for(model_name: str) -> list[str]:
    if model_name not in TAPS:
        raise TriqdefError(f"no FDP tap layers defined for model {model_name!r}: expected one of {', '.join(TAPS)}")
    return TAPS[model_name]


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor, bits: int | None, taps: Sequence[str]) -> dict[str, torch.Tensor]:
    """Normalised (N, H, W) maps at each tap layer of ``model`` at ``bits`` (eval mode)."""
    modules = dict(model.named_modules())
    missing = [t for t in taps if t not in modules]
    if missing:
        raise TriqdefError(f"tap layers {missing} not found in the model")
    out: dict[str, torch.Tensor] = {}
    hooks = [modules[t].register_forward_hook(lambda m, i, o, t=t: out.__setitem__(t, P.to_map(o.detach(), "feature")))
             for t in taps]
    was = model.training
    model.eval()
    try:
        with _ctx(model, bits):
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return out


def input_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Raw input gradients ∇_x CE(f_b(x), y), shape (N, 3, H, W), of ``model`` at ``bits`` (eval mode)."""
    was = model.training
    model.eval()
    x = images.clone().requires_grad_(True)
    with _ctx(model, bits):
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    model.train(was)
    return g.detach()


def compare(a: torch.Tensor, b: torch.Tensor, metrics: Iterable[str], generator: torch.Generator) -> dict[str, dict[str, float]]:
    """Mean of each metric between paired maps ``a[i]``, ``b[i]`` and its chance baseline (deranged pairs)."""
    out = {}
    for name in metrics:
        fn = METRICS[name]
        with torch.no_grad():
            same = fn(a, b).mean().item()
            chance = P.chance_baseline(fn, a, b, generator=generator).mean().item()
        out[name] = {"value": same, "chance": chance}
    return out


def raw_gradient_cosine(ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """Cosine of the flattened raw input gradients, per sample (Table 3's "Cosine")."""
    return F.cosine_similarity(ga.flatten(1), gb.flatten(1), dim=1, eps=1e-20)
