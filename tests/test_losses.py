"""FDP / GPDP (paper eq. 2, 3): values against a hand-written reference, and the one-bit-at-a-time gradient."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from triqdef import perceptual as P
from triqdef.errors import TriqdefError
from triqdef.losses import (
    FeatureDisalignmentPenalty,
    GradientPerceptualDissonancePenalty,
    PenaltySettings,
    describe,
    one_sided_penalty,
    pairwise_penalty,
)


def _features(theta, x, scales):
    """Per 'bit-width' b: a post-ReLU feature map of a shared parameter ``theta`` (bit-widths differ by a fixed distortion)."""
    out = {}
    for b, s in scales.items():
        w = torch.round(theta * s) / s if s else theta  # a crude quantizer without STE; differentiable through theta only at s=None
        w = theta + (w - theta).detach()  # straight-through, like the fake-quantize ops
        out[b] = [F.relu(F.conv2d(x, w, padding=1)), F.relu(F.conv2d(x, w * 0.5 + 0.1, padding=1, stride=2))]
    return out


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(5, 3, 32, 32, generator=g, dtype=torch.float64)
    return theta, x, {32: None, 8: 20.0, 4: 3.0, 2: 1.0}


def test_value_equals_the_literal_double_sum(setup):
    theta, x, scales = setup
    s = PenaltySettings()
    feats = _features(theta, x, scales)
    got = FeatureDisalignmentPenalty(s)(feats)
    want = 0.0
    for bi, bj in itertools.permutations(feats, 2):  # ordered pairs b_i != b_j, as eq. 2 is written
        for fi, fj in zip(feats[bi], feats[bj]):
            ei = P.soft_binarize(P.sobel_edges(P.to_map(fi)), 100, 0.85)
            ej = P.soft_binarize(P.sobel_edges(P.to_map(fj)), 100, 0.85)
            hi, hj = P.soft_hog(P.to_map(fi)), P.soft_hog(P.to_map(fj))
            want = want + 0.5 * P.soft_dice(ei, ej).mean() + 1.0 * F.cosine_similarity(hi, hj, dim=1).mean()
    assert torch.allclose(got, want, rtol=1e-10)
    mean = FeatureDisalignmentPenalty(PenaltySettings(pair_reduction="mean"))(feats)
    assert torch.allclose(mean, want / 12, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_one_bit_at_a_time_gradient_is_exact(setup, reduction):
    theta, x, scales = setup
    s = PenaltySettings(pair_reduction=reduction)
    full = pairwise_penalty({b: [describe(f, "feature", s) for f in fs] for b, fs in _features(theta, x, scales).items()}, s)
    (g_full,) = torch.autograd.grad(full, theta)
    with torch.no_grad():
        detached = {b: [describe(f, "feature", s) for f in fs] for b, fs in _features(theta, x, scales).items()}
    g_acc = torch.zeros_like(theta)
    for b in scales:
        own = [describe(f, "feature", s) for f in _features(theta, x, {b: scales[b]})[b]]
        part = one_sided_penalty(own, {o: d for o, d in detached.items() if o != b}, len(scales), s)
        g_acc += torch.autograd.grad(part, theta)[0]
    assert g_full.abs().sum() > 0
    assert torch.allclose(g_acc, g_full, rtol=1e-8, atol=1e-12)
    assert torch.allclose(pairwise_penalty(detached, s), full.detach(), rtol=1e-12)


def test_gpdp_on_input_gradients_double_backprop(setup):
    theta, x, scales = setup
    xs = x[:3].clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2])
    grads = {}
    for b, fs in _features(theta, xs, scales).items():
        logits = fs[1].mean(dim=(2, 3))
        (grads[b],) = torch.autograd.grad(F.cross_entropy(logits, y), xs, create_graph=True)
    pen = GradientPerceptualDissonancePenalty()(grads)
    (g,) = torch.autograd.grad(pen, theta)
    assert torch.isfinite(pen) and torch.isfinite(g).all() and g.abs().sum() > 0


def test_fewer_than_two_bits_is_zero_and_downsample_keeps_hog_size():
    s = PenaltySettings(downsample=2)
    f = torch.rand(2, 4, 32, 32)
    assert pairwise_penalty({4: [describe(f, "feature", s)]}, s).item() == 0.0
    assert describe(f, "feature", s).edges.shape[-1] == 16
    assert describe(torch.rand(2, 4, 8, 8), "feature", s).edges.shape[-1] == 8  # never below 8x8


def test_identical_maps_give_the_maximum_and_bad_settings_fail():
    s = PenaltySettings()
    f = torch.rand(3, 4, 16, 16)
    d = describe(f, "feature", s)
    val = pairwise_penalty({8: [d], 4: [d]}, s)
    dice = P.soft_dice(d.edges, d.edges).mean()
    assert torch.allclose(val, 2 * (0.5 * dice + 1.0), atol=1e-5)
    with pytest.raises(TriqdefError, match="same layers"):
        pairwise_penalty({8: [d, d], 4: [d]}, s)
    with pytest.raises(TriqdefError, match="same layers"):
        one_sided_penalty([d, d], {4: [d]}, 2, s)
    with pytest.raises(TriqdefError, match="pair_reduction"):
        PenaltySettings(pair_reduction="max")
    with pytest.raises(TriqdefError, match="downsample"):
        PenaltySettings(downsample=0)
