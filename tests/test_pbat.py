"""PBAT as published (Rao et al. 2020; issue 30, item 2): the location-optimised patch attack against a plain
per-image reference, its location moves, its best-of-iterations choice, and the multi-bit step around it."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import calibrated_resnet20
from triqdef import quant
from triqdef.attacks.patches import paste
from triqdef.defenses.pbat import DIRECTIONS, PBATStep, location_optimised_patches
from triqdef.errors import TriqdefError


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 10)).double()


def _reference(model, x, y, contents, locations, steps, eta, stride, seed, border=4):
    """Rao et al.'s AT-RandLO written image by image, as plainly as possible (the same direction draws)."""
    g = torch.Generator().manual_seed(seed)
    n, k, size = x.shape[0], contents.shape[-1], x.shape[-1]
    lo, hi = border, size - border - k
    contents, locations = contents.clone(), locations.clone()
    best = [(-float("inf"), None, None)] * n

    def loss_of(i, c, loc):
        return F.cross_entropy(model(paste(x[i:i + 1], c[None], loc[None])), y[i:i + 1])

    for _ in range(steps):
        moves = DIRECTIONS[torch.randint(0, 4, (n,), generator=g)] * stride
        for i in range(n):
            c = contents[i].clone().requires_grad_(True)
            loss = loss_of(i, c, locations[i])
            (grad,) = torch.autograd.grad(loss, c)
            if loss.item() > best[i][0]:
                best[i] = (loss.item(), contents[i].clone(), locations[i].clone())
            contents[i] = (contents[i] + eta * grad.sign()).clamp(0, 1)
            if stride:
                moved = (locations[i] + moves[i]).clamp(lo, hi)
                with torch.no_grad():
                    if loss_of(i, contents[i], moved).item() > loss.item():
                        locations[i] = moved
    with torch.no_grad():
        for i in range(n):
            loss = loss_of(i, contents[i], locations[i]).item()
            if loss > best[i][0]:
                best[i] = (loss, contents[i].clone(), locations[i].clone())
    return torch.stack([b[1] for b in best]), torch.stack([b[2] for b in best])


@pytest.mark.parametrize("stride", [0, 2])
def test_the_batched_attack_matches_a_per_image_reference(stride):
    model = _net().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    c0 = torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64)
    l0 = torch.randint(4, 21, (6, 2), generator=g)
    c, loc, _, _ = location_optimised_patches(model, x, y, None, c0, l0, 5, 0.1, stride,
                                              torch.Generator().manual_seed(11))
    rc, rloc = _reference(model, x, y, c0, l0, 5, 0.1, stride, 11)
    assert torch.equal(loc, rloc)
    assert torch.allclose(c, rc, atol=1e-9)
    if not stride:
        assert torch.equal(loc, l0)


class _BrightCorner(nn.Module):
    """The true class's logit falls with the brightness of the image's bottom-right corner: the loss rises as a
    bright patch moves there."""

    def forward(self, x):
        weight = torch.zeros(32, 32, dtype=x.dtype)
        weight[16:28, 16:28] = 1.0
        logit0 = 1 - (x.mean(1) * weight).sum((1, 2)) / 10
        return torch.cat([logit0[:, None], torch.zeros(x.shape[0], 9, dtype=x.dtype)], 1)


def test_location_optimisation_moves_the_patch_where_the_loss_is_highest_and_keeps_the_best():
    model = _BrightCorner()
    x = torch.zeros(4, 3, 32, 32, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    start = torch.full((4, 3, 6, 6), 1.0, dtype=torch.float64)
    top_left = torch.full((4, 2), 12)   # overlapping the corner by 2 px: each move towards it raises the loss
    c, loc, fooled_start, fooled = location_optimised_patches(model, x, y, None, start, top_left, 40, 0.1, 2,
                                                              torch.Generator().manual_seed(0))
    assert (loc >= 16).all() and (loc <= 22).all()            # moved into the corner, inside the region (22 = 32-4-6)
    loss = F.cross_entropy(model(paste(x, c, loc)), y, reduction="none")
    assert (loss > F.cross_entropy(model(paste(x, start, top_left)), y, reduction="none")).all()
    assert not fooled_start.any() and fooled.all()            # class 0 loses to the zero logits once the patch is there
    _, still, _, _ = location_optimised_patches(model, x, y, None, start, top_left, 40, 0.1, 0,
                                                torch.Generator().manual_seed(0))
    assert torch.equal(still, top_left)                       # stride 0: no move


def test_the_attack_raises_the_white_box_success_on_a_quantized_resnet():
    m, x = calibrated_resnet20((32, 4), 32)
    m.eval()
    with torch.no_grad(), quant.use_bitwidth(m, 4):
        y = m(x).argmax(1)                                    # every image classified "correctly" to begin with
    g = torch.Generator().manual_seed(0)
    start = torch.rand(32, 3, 8, 8, generator=g)
    locs = torch.randint(4, 21, (32, 2), generator=g)
    _, _, fooled_start, fooled = location_optimised_patches(m, x, y, 4, start, locs, 10, 0.1, 2, g)
    assert fooled.float().mean() > fooled_start.float().mean() + 0.2


def test_the_pbat_step_attacks_one_slice_per_bit_width_and_starts_from_the_pool():
    m, x = calibrated_resnet20((32, 8, 4), 16)
    m = m.float().train()
    y = torch.arange(16) % 10
    pool = {6: torch.rand(3, 3, 6, 6), 12: torch.rand(3, 3, 12, 12)}
    step = PBATStep((32, 8, 4), seed=0, size=(12, 6), attack_steps=2, pool=pool)
    rec = step(m, x, y, 0)
    assert {f"fool_{b}" for b in (32, 8, 4)} <= set(rec) and {f"acc_adv_{b}" for b in (32, 8, 4)} <= set(rec)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in rec.values())
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    drawn = set()
    for k in range(8):   # one size per step, both drawn; with 0 steps every start is a pool patch
        contents, locations = PBATStep((32, 8), seed=0, size=(12, 6), attack_steps=1, pool=pool)._start(
            2, torch.Generator().manual_seed(k), x[:2])
        size = contents.shape[-1]
        drawn.add(size)
        assert all(any(torch.equal(c, p) for p in pool[size]) for c in contents)
        assert ((locations >= 4) & (locations <= 32 - 4 - size)).all()
    assert drawn == {6, 12}
    with pytest.raises(TriqdefError, match=r"no \[9\] px patches"):
        PBATStep((32, 8), seed=0, size=(6, 9), pool=pool)
