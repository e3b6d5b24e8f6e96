import math

import pytest
import torch

from triqdef import quant
import torch.nn.functional as F

from helpers import tiny_trained
from triqdef.attacks.patches import Patch, apply_patch, outside_region_location, paste, region_locations
from triqdef.attacks.universal import PatchRequest, optimise_patches, recipe
from triqdef.attacks.signed_gradient import cosine_decay, signed_gradient_steps
from triqdef.errors import TriqdefError
from triqdef.attacks.success import common_subset, fooling_rate, targeted_asr


def make_patch(size=3, loc=(2, 5)):
    content = torch.arange(3 * size * size, dtype=torch.float32).reshape(3, size, size) / (3 * size * size)
    return Patch(content, loc, target=1, attack="lavan", source_model="toy", source_bits=None)


def test_apply_patch_puts_exactly_the_patch_pixels_at_its_location():
    x = torch.rand(2, 3, 16, 16)
    p = make_patch()
    out = apply_patch(x, p)
    assert torch.equal(out[:, :, 2:5, 5:8], p.content.expand(2, -1, -1, -1))
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[2:5, 5:8] = False
    assert torch.equal(out[:, :, mask], x[:, :, mask])


def test_moving_a_patch_moves_content_and_mask():
    x = torch.zeros(1, 3, 16, 16)
    p = make_patch()
    a, b = apply_patch(x, p), apply_patch(x, p.moved((10, 0)))
    assert torch.equal(b[:, :, 10:13, 0:3], a[:, :, 2:5, 5:8])
    assert b[:, :, 2:5, 5:8].abs().sum() == 0
    assert p.moved((10, 0)).content is p.content and p.location == (2, 5)


def test_per_image_locations_and_bad_locations():
    x = torch.zeros(2, 3, 8, 8)
    out = apply_patch(x, torch.ones(3, 2, 2), torch.tensor([[0, 0], [6, 6]]))
    assert out[0, :, :2, :2].min() == 1 and out[1, :, 6:, 6:].min() == 1 and out.sum() == 2 * 3 * 4
    with pytest.raises(TriqdefError, match="does not fit"):
        apply_patch(x, torch.ones(3, 2, 2), (7, 0))


def canvas_paste(images, contents, locations, masks=None):
    """The reference paste: ``x * (1 - M) + P * M`` on full-image canvases, one padded copy of the
    content (and of its mask) per image, as the package pasted before :func:`paste`."""
    n, (height, width) = images.shape[0], images.shape[-2:]
    k = contents.shape[-1]
    canv, msk = [], []
    for i in range(n):
        r, c = int(locations[i, 0]), int(locations[i, 1])
        pad = (c, width - k - c, r, height - k - r)
        content = contents if contents.ndim == 3 else contents[i]
        mask = torch.ones_like(content[:1]) if masks is None else masks[i]
        canv.append(F.pad(content, pad))
        msk.append(F.pad(mask, pad))
    canvas, mask = torch.stack(canv), torch.stack(msk)
    return images * (1 - mask) + canvas * mask


@pytest.mark.parametrize("shared", [False, True])
def test_paste_equals_the_canvas_and_mask_reference_values_and_gradients_bitwise(shared):
    """Per-image contents (PBAT, TriQDef) and one shared content (LAVAN, GAP, evaluation): the same values and
    the same gradients, to the bit, as the canvas reference; with 64 images a shared content's gradient is a sum
    whose order matters."""
    g = torch.Generator().manual_seed(3)
    n = 64
    x = torch.rand(n, 3, 32, 32, generator=g, requires_grad=True)
    c = torch.rand(*(() if shared else (n,)), 3, 6, 6, generator=g, requires_grad=True)
    loc = torch.randint(0, 27, (n, 2), generator=g)
    loc[:3] = torch.tensor([[0, 0], [26, 26], [0, 26]])
    w = torch.randn(n, 3, 32, 32, generator=g) * 1e3
    ours, ref = paste(x, c, loc), canvas_paste(x, c, loc)
    assert torch.equal(ours, ref)
    gx, gc = torch.autograd.grad((ours * w).sum(), (x, c))
    rx, rc = torch.autograd.grad((ref * w).sum(), (x, c))
    assert torch.equal(gx, rx) and torch.equal(gc, rc) and gc.abs().sum() > 0
    if shared:  # the check has teeth: torch's reduction of an expanded content sums in another order
        (ge,) = torch.autograd.grad((paste(x, c.expand(n, -1, -1, -1), loc) * w).sum(), c)
        assert not torch.equal(ge, rc) and torch.allclose(ge, rc)
    own = c if shared else c[1]
    assert torch.equal(ours[1, :, 26:, 26:], own) and torch.equal(ours[1, :, :26], x[1, :, :26])


def test_paste_through_soft_masks_equals_the_reference_and_checks_its_input():
    """GAP's transformed patches: a (2s)x(2s) canvas blended through its own soft mask per image."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 3, 32, 32, generator=g, requires_grad=True)
    c = torch.rand(5, 3, 12, 12, generator=g, requires_grad=True)
    m = torch.rand(5, 1, 12, 12, generator=g, requires_grad=True)
    loc = torch.tensor([[0, 0], [20, 20], [3, 17], [11, 5], [0, 20]])
    w = torch.randn(5, 3, 32, 32, generator=g)
    ours, ref = paste(x, c, loc, m), canvas_paste(x, c, loc, m)
    assert torch.equal(ours, ref)
    ours_g = torch.autograd.grad((ours * w).sum(), (x, c, m))
    ref_g = torch.autograd.grad((ref * w).sum(), (x, c, m))
    assert all(torch.equal(a, b) for a, b in zip(ours_g, ref_g))
    with pytest.raises(TriqdefError, match="inside 32x32"):
        paste(x, c, torch.tensor([[0, 0]] * 4 + [[21, 0]]), m)
    with pytest.raises(TriqdefError, match="one per image"):
        paste(x, c[:4], loc[:4])


def test_signed_gradient_steps_are_the_plain_loop():
    """Descent with a decaying step (LAVAN, GAP) and ascent with a fixed one (PGD, PBAT) against hand-written loops."""
    g = torch.Generator().manual_seed(0)
    target, start = torch.rand(3, 4, 4, generator=g), torch.rand(3, 4, 4, generator=g)
    seen = []

    def loss(v, k):
        seen.append(k)
        return ((v - target) ** 3).sum()

    got = signed_gradient_steps(loss, start, 5, cosine_decay(0.05, 5), (0, 1), descend=True)
    ref = start
    for k in range(5):
        v = ref.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(((v - target) ** 3).sum(), v)
        ref = (ref - 0.05 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 5))) * grad.sign()).clamp(0, 1)
    assert torch.equal(got, ref) and seen == list(range(5)) and not got.requires_grad
    got = signed_gradient_steps(lambda v, k: ((v - target) ** 3).sum(), start, 3, 0.1, (-0.2, 0.2))
    ref = start
    for _ in range(3):
        v = ref.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(((v - target) ** 3).sum(), v)
        ref = (ref + 0.1 * grad.sign()).clamp(-0.2, 0.2)
    assert torch.equal(got, ref)
    decay = cosine_decay(0.05, 10)
    assert decay(0) == pytest.approx(0.05) and decay(10) == pytest.approx(0.005)


def test_regions():
    assert region_locations(6) == (4, 22)
    g = torch.Generator().manual_seed(0)
    lo, hi = region_locations(6)
    for _ in range(50):
        r, c = outside_region_location(6, g)
        assert not (lo <= r <= hi and lo <= c <= hi)
        assert 0 <= r <= 26 and 0 <= c <= 26


def test_rates_on_hand_made_predictions():
    labels = torch.tensor([0, 1, 2, 3, 3, 5, 6, 7])
    clean = torch.tensor([0, 1, 2, 3, 0, 5, 6, 0])   # images 4 and 7 wrong when clean
    adv = torch.tensor([3, 3, 2, 3, 3, 3, 1, 3])
    # target 3: eligible = correct & label != 3 -> images 0, 1, 2, 5, 6 (5 images); hits (adv == 3): 0, 1, 5
    r = targeted_asr(clean, adv, labels, target=3)
    assert r.n == 5 and r.value == pytest.approx(3 / 5)
    f = fooling_rate(clean, adv, labels, target=3)
    assert f.n == 5 and f.value == pytest.approx(4 / 5)  # 0, 1, 5, 6 changed
    other = torch.tensor([0, 9, 2, 3, 3, 5, 6, 7])   # a second model, wrong on image 1
    common = common_subset([clean, other], labels)
    rc = targeted_asr(clean, adv, labels, target=3, subset=common)
    assert rc.n == 4 and rc.value == pytest.approx(2 / 4)
    empty = targeted_asr(clean, adv, labels, target=3, subset=torch.zeros(8, dtype=torch.bool))
    assert empty.n == 0 and empty.value != empty.value  # NaN


@pytest.mark.parametrize("attack", ["lavan", "gap"])
@pytest.mark.parametrize("bits", [None, 4])
def test_attacks_raise_the_target_probability(attack, bits):
    model, x, labels = tiny_trained()
    if bits is not None:
        model = quant.quantize_model(model, [32, 4])
        quant.calibrate(model, [x], 4)
        model.eval()
    target = 2
    opt = recipe(attack, steps=60, step_size=0.1, images_per_patch=64)
    (patch,) = optimise_patches(model, x, labels, 5, [PatchRequest(target, seed=1, border=2)], opt, bits=bits)
    assert patch.size == 5 and patch.attack == attack and patch.source_bits == bits and patch.target == target

    def p_target(images):
        ctx = quant.use_bitwidth(model, bits) if bits else torch.no_grad()
        with ctx, torch.no_grad():
            return torch.softmax(model(images), 1)[:, target][labels != target].mean().item()

    random_patch = patch.moved(patch.location)
    random_patch.content = torch.rand_like(patch.content, generator=torch.Generator().manual_seed(5))
    assert p_target(apply_patch(x, patch)) > p_target(apply_patch(x, random_patch)) + 0.2
