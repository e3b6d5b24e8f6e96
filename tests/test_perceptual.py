"""Tests of triqdef.perceptual: hard HOG == skimage, SoftHOG close to it and
differentiable, soft edge metrics, validation, modules, chance baseline."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from triqdef import perceptual as P
from triqdef.errors import TriqdefError

skfeature = pytest.importorskip("skimage.feature")

SAMPLE = Path(P.__file__).resolve().parent / "_sample" / "cifar10-sample-jpeg.tar.gz"
FULL = Path("/tmp/dfull/test_images.npy")


def sk_hog(m: np.ndarray) -> np.ndarray:
    return skfeature.hog(
        m, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True
    )


def cosine_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cifar_rgb() -> np.ndarray:
    """About 20 real CIFAR-10 images (2 per class), (N, 32, 32, 3) float64 in [0, 1].

    From the committed sample archive (works on a fresh clone), else the prepared full data."""
    if SAMPLE.is_file():
        from PIL import Image

        per_class: dict[str, list[np.ndarray]] = {}
        with tarfile.open(SAMPLE, mode="r:gz") as tf:
            for member in tf:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) != 3 or not parts[2].endswith(".jpg") or parts[0] != "train":
                    continue
                got = per_class.setdefault(parts[1], [])
                if len(got) < 2:
                    data = tf.extractfile(member).read()
                    got.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 255.0)
                if len(per_class) == 10 and all(len(v) == 2 for v in per_class.values()):
                    break
        imgs = np.stack([im for k in sorted(per_class) for im in per_class[k]])
    elif FULL.is_file():
        imgs = np.asarray(np.load(FULL, mmap_mode="r")[:20], dtype=np.float64) / 255.0
    else:
        pytest.skip("no CIFAR-10 images available")
    assert imgs.shape[1:] == (32, 32, 3) and len(imgs) >= 10
    return imgs


@pytest.fixture(scope="module")
def real_maps(cifar_rgb) -> dict[str, np.ndarray]:
    from skimage.color import rgb2gray

    return {
        "gray": np.stack([rgb2gray(im) for im in cifar_rgb]),
        "channel-mean": P.to_map(torch.from_numpy(cifar_rgb).permute(0, 3, 1, 2)).numpy(),
    }


# --------------------------------------------------------------------------- hard HOG


@pytest.mark.parametrize("hw", [(8, 8), (16, 16), (32, 32), (30, 30), (13, 9), (8, 17)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hog_matches_skimage_random(hw, dtype):
    x = np.random.default_rng(hash(hw) % 2**32).random((4, *hw)).astype(dtype)
    ref = np.stack([sk_hog(m) for m in x])
    out = P.hog(torch.from_numpy(x))
    assert out.shape == ref.shape == (4, (hw[0] // 4 - 1) * (hw[1] // 4 - 1) * 36)
    assert out.dtype == torch.from_numpy(x).dtype
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


def test_hog_matches_skimage_real(real_maps):
    for name, maps in real_maps.items():
        ref = np.stack([sk_hog(m) for m in maps])
        out = P.hog(torch.from_numpy(maps)).numpy()
        assert np.abs(out - ref).max() < 1e-5, name


def test_hog_matches_skimage_on_ties():
    # Quantised maps: many exactly horizontal / vertical gradients (angles 0, 90, 180).
    x = np.round(np.random.default_rng(1).random((4, 16, 16)) * 3) / 3
    ref = np.stack([sk_hog(m) for m in x])
    np.testing.assert_allclose(P.hog(torch.from_numpy(x)).numpy(), ref, rtol=0, atol=1e-5)


def test_hog_of_flat_map_is_zero():
    assert torch.count_nonzero(P.hog(torch.zeros(2, 8, 8))) == 0
    assert torch.count_nonzero(P.soft_hog(torch.full((2, 8, 8), 0.3))) == 0


# --------------------------------------------------------------------------- SoftHOG


def test_soft_hog_close_to_skimage_real(real_maps):
    for name, maps in real_maps.items():
        ref = np.stack([sk_hog(m) for m in maps])
        soft = P.soft_hog(torch.from_numpy(maps)).numpy()
        assert soft.shape == ref.shape
        cos = cosine_np(soft, ref)
        print(f"soft_hog vs skimage ({name}, {len(maps)} images): mean {cos.mean():.4f} min {cos.min():.4f}")
        assert cos.mean() >= 0.97, name


def test_soft_hog_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8, 8, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(P.soft_hog, (x,), eps=1e-6, atol=1e-5, rtol=1e-3)
    y = torch.rand(1, 13, 9, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: P.soft_hog(t, temperature=0.1), (y,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_soft_hog_nonzero_gradients():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    d = P.soft_hog(x)
    (d * torch.linspace(-1, 1, d.shape[1])).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_soft_hog_unsigned_orientation():
    # θ mod π: a map and its negation (all gradients flipped by 180°) have the same descriptor.
    x = torch.rand(2, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(P.soft_hog(x), P.soft_hog(-x))
    torch.testing.assert_close(P.hog(x), P.hog(-x))


# --------------------------------------------------------------------------- gradients of every soft metric


def _fdp_term(a, b):
    # alpha * SoftDice(S(E(a)), S(E(b))) + beta * cos(SoftHOG(a), SoftHOG(b)), eq. 2
    dice = P.soft_dice(P.soft_binarize(P.sobel_edges(a)), P.soft_binarize(P.sobel_edges(b)))
    return 0.5 * dice + 1.0 * P.hog_cosine(a, b, soft=True)


SOFT_METRICS = {
    "soft_edge_dice": lambda a, b: P.soft_dice(P.soft_binarize(P.sobel_edges(a)), P.soft_binarize(P.sobel_edges(b))),
    "hog_cosine_soft": lambda a, b: P.hog_cosine(a, b, soft=True),
    "fdp_term": _fdp_term,
    "perceptual_similarity": P.perceptual_similarity,
    "map_cosine": P.cosine_similarity_maps,
}


@pytest.mark.parametrize("kind", ["random", "zeros", "constant"])
@pytest.mark.parametrize("metric", sorted(SOFT_METRICS))
def test_soft_metric_gradients_finite(metric, kind):
    g = torch.Generator().manual_seed(4)
    raw = {
        "random": torch.rand(2, 3, 16, 16, generator=g),
        "zeros": torch.zeros(2, 3, 16, 16),
        "constant": torch.full((2, 3, 16, 16), 0.7),
    }[kind].requires_grad_(True)
    other = torch.rand(2, 3, 16, 16, generator=g).requires_grad_(True)
    a = P.to_map(raw)  # channel mean + min-max (a flat map becomes zeros)
    b = P.to_map(other, kind="gradient")
    for x, y in ((a, b), (a, a), (P.reduce_feature_map(raw), P.reduce_feature_map(raw))):
        val = SOFT_METRICS[metric](x, y)
        assert val.shape == (2,) and torch.isfinite(val).all()
        raw.grad = other.grad = None
        val.sum().backward(retain_graph=True)
        for t in (raw, other):
            assert t.grad is None or torch.isfinite(t.grad).all()
    if kind == "random":
        val = SOFT_METRICS[metric](P.to_map(raw), P.to_map(other))
        raw.grad = None
        val.sum().backward()
        assert raw.grad.abs().sum() > 0


def test_perceptual_similarity_matches_fdp_term():
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    torch.testing.assert_close(P.perceptual_similarity(a, b), _fdp_term(a, b))
    assert torch.autograd.gradcheck(
        lambda t: P.perceptual_similarity(t, b[:1].double()),
        (a[:1].double().requires_grad_(True),),
    )


# --------------------------------------------------------------------------- maps, edges, dice, IoU


def test_map_reductions():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 5, 9, 7, generator=g) - 0.5
    torch.testing.assert_close(P.reduce_feature_map(x), x.mean(1))
    torch.testing.assert_close(P.reduce_input_gradient(x), x.abs().mean(1))
    m = P.to_map(x, kind="gradient")
    assert m.shape == (2, 9, 7)
    assert torch.allclose(m.flatten(1).amin(1), torch.zeros(2)) and torch.allclose(m.flatten(1).amax(1), torch.ones(2))
    c = torch.full((2, 4, 4), 3.0, requires_grad=True)
    out = P.minmax_normalize(c)
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.isfinite(c.grad).all()


def test_sobel_edges():
    m = torch.zeros(1, 8, 8)
    m[:, :, 4:] = 1.0
    e = P.sobel_edges(m)
    assert e.shape == m.shape
    # replicate padding: no artificial edge on the border; the step is at columns 3-4
    assert torch.allclose(e[0, :, 0], torch.full((8,), 1e-6)) and torch.allclose(e[0, :, 7], torch.full((8,), 1e-6))
    assert torch.allclose(e[0, :, 3], torch.full((8,), 0.5)) and torch.allclose(e[0, :, 4], torch.full((8,), 0.5))
    z = torch.zeros(2, 8, 8, requires_grad=True)
    P.sobel_edges(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_soft_binarize_threshold():
    e = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(7), requires_grad=True)
    s = P.soft_binarize(e)
    assert s.shape == e.shape and ((s > 0.5).flatten(1).float().mean(1) - 0.15).abs().max() < 0.01
    s.sum().backward()
    assert torch.isfinite(e.grad).all()
    s2 = P.soft_binarize(e, detach_threshold=True)
    torch.testing.assert_close(s, s2)


def test_soft_dice_properties():
    g = torch.Generator().manual_seed(8)
    a, b = torch.rand(4, 8, 8, generator=g), torch.rand(4, 8, 8, generator=g)
    torch.testing.assert_close(P.soft_dice(a, b), P.soft_dice(b, a))
    binary = (a > 0.5).float()
    assert (P.soft_dice(binary, binary) >= 0.99).all()
    left = torch.zeros(4, 8, 8)
    left[:, :, :4] = 1
    assert (P.soft_dice(left, 1 - left) < 1e-6).all()
    assert (P.soft_dice(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)) == 0).all()


def test_edge_iou():
    g = torch.Generator().manual_seed(9)
    a, b = torch.rand(4, 16, 16, generator=g), torch.rand(4, 16, 16, generator=g)
    assert torch.equal(P.edge_iou(a, a), torch.ones(4))
    v = P.edge_iou(a, b)
    assert v.shape == (4,) and ((v >= 0) & (v < 1)).all()
    torch.testing.assert_close(v, P.edge_iou(b, a))
    # two constant maps: both edge sets empty -> 1 by convention
    assert torch.equal(P.edge_iou(torch.zeros(2, 8, 8), torch.ones(2, 8, 8)), torch.ones(2))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: P.hog(torch.rand(8, 8)),  # wrong ndim
        lambda: P.hog(torch.rand(1, 1, 8, 8)),
        lambda: P.hog(torch.rand(2, 7, 8)),  # smaller than 8x8
        lambda: P.soft_hog(torch.rand(2, 16, 6)),
        lambda: P.hog_cosine(torch.rand(2, 4, 4), torch.rand(2, 4, 4)),
        lambda: P.soft_hog(torch.tensor([[[float("nan")] * 8] * 8])),
        lambda: P.soft_dice(torch.rand(2, 8, 8), torch.full((2, 8, 8), float("inf"))),
        lambda: P.soft_dice(torch.rand(2, 8, 8), torch.rand(2, 8, 9)),  # shape mismatch
        lambda: P.sobel_edges(torch.ones(2, 8, 8, dtype=torch.int64)),  # dtype
        lambda: P.sobel_edges(np.zeros((2, 8, 8))),  # not a tensor
        lambda: P.reduce_feature_map(torch.rand(2, 8, 8)),
        lambda: P.to_map(torch.rand(2, 3, 8, 8), kind="logits"),
        lambda: P.to_map(torch.rand(2, 3, 8, 8).index_fill(1, torch.tensor([2]), float("nan"))),  # one NaN channel
        lambda: P.to_map(torch.rand(2, 3, 8, 8).index_fill(1, torch.tensor([0]), float("inf")), kind="gradient"),
        lambda: P.to_map(torch.rand(2, 8, 8)),  # wrong ndim
        lambda: P.soft_edge_hog(torch.rand(2, 6, 8)),  # smaller than 8x8
        lambda: P.soft_edge_hog(torch.rand(2, 8, 8), q=-0.1),
        lambda: P.soft_binarize(torch.rand(2, 8, 8), q=1.5),
        lambda: P.soft_binarize(torch.rand(2, 8, 8), k=0),
        lambda: P.soft_hog(torch.rand(2, 8, 8), temperature=-1.0),
        lambda: P.SoftDice(reduction="avg"),
        lambda: P.chance_baseline(P.soft_dice, torch.rand(1, 8, 8), torch.rand(1, 8, 8)),
        lambda: P.chance_baseline(P.soft_dice, torch.rand(2, 8, 8), torch.rand(3, 8, 8)),
    ],
)
def test_invalid_inputs_rejected(call):
    with pytest.raises(ValueError) as info:
        call()
    assert isinstance(info.value, TriqdefError)
    assert str(info.value)


def test_penalty_fast_path_equals_the_checked_functions():
    """soft_edge_hog / batched_soft_dice / descriptor_cosine (validated once, broadcast) give exactly the
    values of the public per-stage functions that the hand-written references use."""
    g = torch.Generator().manual_seed(11)
    m = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    edges, hog = P.soft_edge_hog(m, k=50.0, q=0.8)
    assert torch.equal(edges, P.soft_binarize(P.sobel_edges(m), 50.0, 0.8)) and torch.equal(hog, P.soft_hog(m))
    others = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64)
    stacked = P.batched_soft_dice(edges, others)
    assert stacked.shape == (4, 3)
    for k in range(4):
        torch.testing.assert_close(stacked[k], P.soft_dice(edges, others[k]), rtol=1e-14, atol=0)
    other_hogs = torch.rand(4, 3, hog.shape[-1], generator=g, dtype=torch.float64)
    torch.testing.assert_close(P.descriptor_cosine(hog, other_hogs)[2],
                               torch.nn.functional.cosine_similarity(hog, other_hogs[2], dim=1), rtol=1e-12, atol=0)


def test_half_precision_promoted():
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(10))
    out = P.soft_hog(x.to(torch.bfloat16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --------------------------------------------------------------------------- modules


def test_modules_match_functions():
    g = torch.Generator().manual_seed(11)
    a, b = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    pairs = [
        (P.SoftDice, P.soft_dice, {}),
        (P.SoftEdgeDice, P.soft_edge_dice, {"q": 0.9}),
        (P.EdgeIoU, P.edge_iou, {}),
        (P.HOGCosine, P.hog_cosine, {}),
        (P.HOGCosine, P.hog_cosine, {"soft": False}),
        (P.MapCosine, P.cosine_similarity_maps, {}),
        (P.PerceptualSimilarity, P.perceptual_similarity, {"alpha": 0.3, "temperature": 0.1}),
    ]
    for module, fn, kw in pairs:
        ref = fn(a, b, **kw)
        assert ref.shape == (3,)
        torch.testing.assert_close(module(**kw, reduction="none")(a, b), ref)
        torch.testing.assert_close(module(**kw, reduction="mean")(a, b), ref.mean())
        torch.testing.assert_close(module(**kw, reduction="sum")(a, b), ref.sum())
        assert module(**kw)(a, b).dim() == 0  # default reduction: mean


# --------------------------------------------------------------------------- chance baseline


def test_derangement():
    g = torch.Generator().manual_seed(12)
    for n in (2, 3, 5, 64):
        p = P.derangement(n, g)
        assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()
    assert torch.equal(P.derangement(10, torch.Generator().manual_seed(1)), P.derangement(10, torch.Generator().manual_seed(1)))


def test_chance_baseline_random_maps(real_maps):
    g = torch.Generator().manual_seed(13)
    a, b = torch.rand(64, 32, 32, generator=g), torch.rand(64, 32, 32, generator=g)
    metrics = {
        "hog_cosine(hard)": lambda x, y: P.hog_cosine(x, y, soft=False),
        "hog_cosine(soft)": P.hog_cosine,
        "soft_edge_dice": P.soft_edge_dice,
        "edge_iou": P.edge_iou,
        "map_cosine": P.cosine_similarity_maps,
    }
    real = torch.from_numpy(real_maps["channel-mean"])
    for name, metric in metrics.items():
        v = P.chance_baseline(metric, a, b, torch.Generator().manual_seed(0))
        r = P.chance_baseline(metric, real, real, torch.Generator().manual_seed(0))
        assert v.shape == (64,) and not v.requires_grad
        print(f"chance baseline {name}: random 32x32 {v.mean():.4f}, CIFAR channel-mean {r.mean():.4f}")
        if name.startswith("hog_cosine"):
            assert 0.5 <= v.mean().item() <= 0.85
    # a map against itself is far above the chance level
    assert P.hog_cosine(real, real).mean() > P.chance_baseline(P.hog_cosine, real, real, g).mean() + 0.2
