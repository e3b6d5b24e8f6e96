"""Signed-gradient optimisation: the one loop every attack in the package runs (FGSM / PGD style).

One step is ``x ← clip(x ± η_k · sign(∇_x L_k(x)), lo, hi)`` (Goodfellow et al. 2015; Madry et al. 2018):

* the universal patches of :mod:`triqdef.attacks.patches` (LAVAN, GAP) *descend* their targeted loss with a
  step that decays with a cosine from ``step_size`` to ``step_size / 10`` (:func:`cosine_decay`);
* the inner attacks of adversarial training (:mod:`triqdef.defenses.steps`: PBAT's per-image patches,
  TriQDef's on-the-fly patches) and :func:`pgd_linf` (DWQ's PGD-ℓ∞) *ascend* the cross-entropy with a fixed step.

The loss is a callable ``loss(x, k)`` of the current iterate (a leaf that requires grad) and the step
index; it may draw random numbers (a batch, locations, a bit-width) from the caller's generator, once per
step, in its own order. The gradient is taken with :func:`torch.autograd.grad` (no parameter gradient
accumulates) and the iterate leaves the loop detached.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from triqdef import quant
from triqdef.syncguard import host_to_device


def signed_gradient_steps(loss: Callable[[torch.Tensor, int], torch.Tensor], start: torch.Tensor, steps: int,
                          step_size: float | Callable[[int], float], bounds: tuple[float, float], *,
                          descend: bool = False, progress: str | None = None) -> torch.Tensor:
    """``steps`` signed-gradient steps from ``start``: ``x ← clip(x ± η_k sign(∇ loss(x, k)), *bounds)``.

    ``step_size``: a number, or a callable ``η(k)`` of the step index (e.g. :func:`cosine_decay`).
    ``descend=True`` steps against the gradient (minimises ``loss``), otherwise along it (maximises).
    ``progress``: a progress-bar label, or None for no bar. Returns the last iterate (detached).
    """
    lo, hi = bounds
    x = start
    for k in tqdm(range(steps), desc=progress, disable=progress is None, leave=False):
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(leaf, k), leaf)
        eta = step_size(k) if callable(step_size) else step_size
        x = x.detach() - eta * grad.sign() if descend else x.detach() + eta * grad.sign()
        x = x.clamp(lo, hi)
    return x


def cosine_decay(step_size: float, steps: int) -> Callable[[int], float]:
    """``η(k) = step_size · (0.1 + 0.9 · ½ (1 + cos(π k / steps)))``: from ``step_size`` down to ``step_size / 10``."""
    return lambda k: step_size * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / steps)))


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int | None, eps: float, alpha: float, steps: int,
             generator: torch.Generator) -> torch.Tensor:
    """PGD-ℓ∞ (Madry et al. 2018) with a random start in the ε-ball, at one bit-width (None: as it is), in eval mode.

    Ascends the cross-entropy of ``(x + δ).clamp(0, 1)`` over ``δ ∈ [−ε, ε]`` with steps of ``alpha``.
    """
    delta = (host_to_device(torch.rand(x.shape, generator=generator), x.device) * 2 - 1) * eps
    with quant.eval_mode(model), quant.use_bitwidth(model, bits):
        delta = signed_gradient_steps(lambda d, k: F.cross_entropy(model((x + d).clamp(0, 1)), y), delta, steps,
                                      alpha, (-eps, eps))
    return (x + delta).clamp(0, 1).detach()
