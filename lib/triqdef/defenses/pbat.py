"""PBAT: patch-based adversarial training with location-optimised patches (Rao, Stutz and Schiele 2020,
"Adversarial Training against Location-Optimized Adversarial Patches"; docs/design.md#pbat).

The published inner attack (their AT-RandLO) gives every training image its own untargeted patch and optimises
its content *and* its location: each iteration takes one signed-gradient step on the content (raising the
cross-entropy of the true class), then moves the patch by ``stride`` pixels in a random direction and keeps the
move when it raises the loss; each image keeps the patch and location of its highest loss over the iterations.
:func:`location_optimised_patches` is that attack at one bit-width of a switchable-precision model.

:class:`PBATStep` runs it on the multi-bit shared backbone: a share ρ of each batch is patched, and that patched
part is split into one slice per active bit-width, each slice attacked white-box at its own bit-width; every
bit-width then trains on the clean part and on the whole patched part (clean + adversarial cross-entropy,
averaged over the bit-widths). Each image's patch starts from a patch of the training pool (``init: pool``: the
FP-made LAVAN/GAP patches TriQDef trains on, so that the ``seen`` set, new patches of that distribution, is seen
by PBAT too) or from uniform noise (``init: noise``, the publication's start).

What each step measured, per bit-width ``b`` (its own slice): ``fool_init_b`` and ``fool_b``, the share of the
slice's images misclassified with the starting patches and with the optimised ones (the inner attack's white-box
success), and ``acc_adv_b``, the accuracy at ``b`` on the whole patched part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.attacks.patches import paste, random_locations, region_locations
from triqdef.defenses.steps import _generator
from triqdef.syncguard import host_int, host_to_device
from triqdef.training.records import StepRecord, mean_of

#: The four moves of the location optimisation (row, column), as in Rao et al. 2020.
DIRECTIONS = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])


def location_optimised_patches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int, contents: torch.Tensor,
                               locations: torch.Tensor, steps: int, step_size: float, stride: int,
                               generator: torch.Generator, border: int = 4):
    """Rao et al. 2020's untargeted patch attack with random location optimisation, at ``bits`` in eval mode.

    ``contents`` (N, 3, k, k) and ``locations`` (N, 2) are the start, one patch per image, on ``x``'s device.
    Each of ``steps`` iterations: a signed-gradient step of ``step_size`` on the contents (ascending the
    per-image cross-entropy), then each patch moved by ``stride`` pixels in a random direction (drawn from
    ``generator``), kept inside the training region, and the move kept where it raises that image's loss above
    the one before the step (``stride`` 0: no location optimisation). Every iterate, and the final one, is
    scored; each image keeps its highest-loss patch and location.

    Returns ``(contents, locations, fooled_start, fooled)``: the best patches, their locations, and per image
    whether the starting and the best patch make the model misclassify it (bool tensors on the device; nothing
    is read into Python).
    """
    n, size = x.shape[0], contents.shape[-1]
    lo, hi = region_locations(size, x.shape[-1], border)
    contents, locations = contents.detach(), locations.detach()
    best_loss = torch.full((n,), -torch.inf, device=x.device)
    best_contents, best_locations = contents, locations
    best_fooled = fooled_start = torch.zeros(n, dtype=torch.bool, device=x.device)

    def keep_best(loss, logits, c, loc):
        nonlocal best_loss, best_contents, best_locations, best_fooled
        better = loss > best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_contents = torch.where(better[:, None, None, None], c, best_contents)
        best_locations = torch.where(better[:, None], loc, best_locations)
        best_fooled = torch.where(better, logits.argmax(1) != y, best_fooled)

    with quant.eval_mode(model), quant.use_bitwidth(model, bits):
        for k in range(steps):
            leaf = contents.requires_grad_(True)
            logits = model(paste(x, leaf, locations))
            loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            loss, logits = loss.detach(), logits.detach()
            if k == 0:
                fooled_start = logits.argmax(1) != y
            keep_best(loss, logits, contents.detach(), locations)
            contents = (contents.detach() + step_size * grad.sign()).clamp(0, 1)
            if stride:
                moves = DIRECTIONS[torch.randint(0, len(DIRECTIONS), (n,), generator=generator)] * stride
                moved = (locations + host_to_device(moves, x.device)).clamp(lo, hi)
                with torch.no_grad():
                    moved_loss = F.cross_entropy(model(paste(x, contents, moved)), y, reduction="none")
                locations = torch.where((moved_loss > loss)[:, None], moved, locations)
        with torch.no_grad():
            logits = model(paste(x, contents, locations))
            if steps == 0:
                fooled_start = logits.argmax(1) != y
            keep_best(F.cross_entropy(logits, y, reduction="none"), logits, contents, locations)
    return best_contents, best_locations, fooled_start, best_fooled


class PBATStep:
    """PBAT on the multi-bit backbone (see the module docstring); ``log`` keys: loss_clean, loss_adv, and per
    bit-width acc_adv_b, fool_init_b, fool_b."""

    def __init__(self, bits: Sequence[int], seed: int, rho: float = 0.5, size: int | Sequence[int] = 6,
                 attack_steps: int = 3, step_size: float = 0.1, border: int = 4, stride: int = 2,
                 pool: Mapping[int, torch.Tensor] | None = None):
        self.bits, self.seed, self.rho = list(bits), seed, rho
        self.sizes = [int(size)] if isinstance(size, int) else sorted(int(s) for s in size)   # one drawn per step
        self.attack_steps, self.step_size, self.border, self.stride = attack_steps, step_size, border, stride
        self.pool = {int(k): v for k, v in (pool or {}).items() if len(v)}   # init: pool (None: uniform noise)
        missing = [s for s in self.sizes if self.pool and s not in self.pool]
        if missing:
            from triqdef.errors import TriqdefError

            raise TriqdefError(f"PBAT starts from the training pool but it has no {missing} px patches: expected "
                               f"the sizes {self.sizes} (results/patches/patches.pt, 'triqdef patches make')")

    def _start(self, n: int, g: torch.Generator, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's starting patch (a random pool patch of the step's size, or uniform noise) and location."""
        size = self.sizes[host_int(torch.randint(0, len(self.sizes), (1,), generator=g))] if len(self.sizes) > 1 \
            else self.sizes[0]
        if self.pool:
            pool = self.pool[size]
            contents = pool[torch.randint(0, len(pool), (n,), generator=g)]
        else:
            contents = torch.rand(n, 3, size, size, generator=g)
        locations = random_locations(n, size, g, x.shape[-1], self.border)
        return host_to_device(contents, x.device), host_to_device(locations, x.device)

    def __call__(self, model, x, y, step) -> StepRecord:
        n_adv = max(1, int(round(self.rho * x.shape[0])))
        n_clean = x.shape[0] - n_adv
        x_att, y_att = x[n_clean:], y[n_clean:]
        g = _generator(self.seed, step, 3)
        contents, locations = self._start(n_adv, g, x)
        rec = StepRecord()
        # one slice of the patched part per bit-width (tensor_split: sizes differ by at most one; a slice may be empty)
        for b, part in zip(self.bits, torch.arange(n_adv).tensor_split(len(self.bits))):
            if not len(part):
                continue
            idx = host_to_device(part, x.device)
            c, loc, fooled_start, fooled = location_optimised_patches(
                model, x_att[idx], y_att[idx], b, contents[idx], locations[idx], self.attack_steps, self.step_size,
                self.stride, g, self.border)
            contents, locations = contents.index_copy(0, idx, c), locations.index_copy(0, idx, loc)
            rec[f"fool_init_{b}"], rec[f"fool_{b}"] = fooled_start.float().mean(), fooled.float().mean()
        x_adv = paste(x_att, contents, locations).detach()
        ce_cleans, ce_advs = [], []
        for b in self.bits:
            with quant.use_bitwidth(model, b):
                logits = model(torch.cat([x[:n_clean], x_adv]))
            ce_clean = F.cross_entropy(logits[:n_clean], y[:n_clean])
            ce_adv = F.cross_entropy(logits[n_clean:], y_att)
            ((ce_clean + ce_adv) / len(self.bits)).backward()
            ce_cleans.append(ce_clean.detach())
            ce_advs.append(ce_adv.detach())
            rec[f"acc_adv_{b}"] = (logits[n_clean:].argmax(1) == y_att).float().mean()
        rec["loss_clean"], rec["loss_adv"] = mean_of(ce_cleans), mean_of(ce_advs)
        return rec
