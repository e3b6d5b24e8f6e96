"""Perceptual similarity metrics for FDP and GPDP (paper 3.2, 3.3, App. C.1).

The paper compares *maps* (one spatial map per sample) produced by models of
different bit-widths with two hard metrics, Edge IoU and HOG cosine (eq. 1,
Table 3, Table 12, Figure 2), and trains with their differentiable
counterparts (eq. 2 for FDP, eq. 3 for GPDP)::

    alpha * SoftDice(S(E(a)), S(E(b))) + beta * cos(SoftHOG(a), SoftHOG(b))

with ``E`` the Sobel edge magnitude, ``S(A) = sigmoid(k (A - tau))`` a soft
binarisation at the per-sample ``q``-quantile ``tau`` of ``A`` (``k = 100``,
``q = 0.85``), ``SoftDice(A, B) = 2 sum(AB) / (sum A + sum B + eps)`` and
``SoftHOG`` a differentiable HOG (9 unsigned orientations, 4x4-pixel cells,
2x2-cell blocks, L2-Hys). ``S`` is applied in both penalties: eq. 2 has it,
eq. 3 and Algorithms 1 and 2 leave it out
(docs/design.md#soft-binarisation-in-both-penalties).

Shapes
------
* A *feature map* or an *input gradient* is ``(N, C, H, W)``;
  :func:`to_map` turns it into one map per sample, ``(N, H, W)``, min-max
  normalised to ``[0, 1]`` per sample (feature map: channel mean;
  input gradient: channel mean of ``|g|``).
* Every map function takes ``(N, H, W)`` floating tensors; similarity
  functions return one value per sample, ``(N,)``; descriptors are ``(N, D)``.

Public API
----------
Map preparation: :func:`reduce_feature_map`, :func:`reduce_input_gradient`,
:func:`minmax_normalize`, :func:`to_map`.
Edges: :func:`sobel_edges`, :func:`soft_binarize`, :func:`soft_dice`
(:class:`SoftDice`), :func:`soft_edge_dice` (:class:`SoftEdgeDice`),
:func:`edge_iou` (:class:`EdgeIoU`).
HOG: :func:`hog` (equal to ``skimage.feature.hog``), :func:`soft_hog`,
:func:`hog_cosine` (:class:`HOGCosine`).
Other: :func:`cosine_similarity_maps` (:class:`MapCosine`),
:func:`perceptual_similarity` (:class:`PerceptualSimilarity`, the bracket of
eq. 2 / eq. 3 for one pair), :func:`derangement`, :func:`chance_baseline`.
The penalties' fast path (:mod:`triqdef.losses`): :func:`soft_edge_hog` (both
descriptors of a map, validated once), :func:`batched_soft_dice` and
:func:`descriptor_cosine` (no validation, broadcast over a stack of bit-widths).

Invalid input (wrong ndim or shape, non-floating dtype, NaN/inf, a map smaller
than 8x8 for HOG, a bad parameter) raises :class:`PerceptualInputError`, which
is both a :class:`ValueError` and a :class:`triqdef.errors.TriqdefError`.
"""

from __future__ import annotations

import math
import inspect
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef.errors import TriqdefError
from triqdef.syncguard import host_to_device

__all__ = [
    "PerceptualInputError",
    "HOG_ORIENTATIONS",
    "HOG_CELL",
    "HOG_BLOCK",
    "HOG_MIN_SIZE",
    "DEFAULT_SOFT_HOG_TEMPERATURE",
    "reduce_feature_map",
    "reduce_input_gradient",
    "minmax_normalize",
    "to_map",
    "sobel_edges",
    "soft_binarize",
    "soft_dice",
    "batched_soft_dice",
    "soft_edge_dice",
    "edge_iou",
    "hog",
    "soft_hog",
    "soft_edge_hog",
    "descriptor_cosine",
    "hog_cosine",
    "cosine_similarity_maps",
    "perceptual_similarity",
    "derangement",
    "chance_baseline",
    "SoftDice",
    "SoftEdgeDice",
    "EdgeIoU",
    "HOGCosine",
    "MapCosine",
    "PerceptualSimilarity",
]

#: HOG settings of the paper (eq. 2): 9 unsigned orientations, 4x4-pixel cells, 2x2-cell blocks.
HOG_ORIENTATIONS = 9
HOG_CELL = 4
HOG_BLOCK = 2
#: Smallest map side HOG accepts (one block of 2x2 cells of 4x4 pixels).
HOG_MIN_SIZE = HOG_CELL * HOG_BLOCK
#: L2-Hys constants of ``skimage.feature._hog._hog_normalize_block``.
_HYS_EPS = 1e-5
_HYS_CLIP = 0.2
#: Default temperature of the soft orientation assignment in :func:`soft_hog`.
DEFAULT_SOFT_HOG_TEMPERATURE = 0.05

_REDUCTIONS = ("mean", "sum", "none")


class PerceptualInputError(TriqdefError, ValueError):
    """Invalid input to a perceptual metric (shape, dtype, non-finite values, parameter)."""


# --------------------------------------------------------------------------- validation


def _check(x, name: str, ndim: int, layout: str, min_hw: int = 1, finite: bool = True, blocking: bool = True) -> torch.Tensor:
    """Validate a tensor: type, ndim, floating dtype, spatial size, finite values (unless ``finite=False``; the
    values' check waits for the device unless ``blocking=False``, :func:`_check_finite`).

    Half-precision inputs are promoted to float32 (quantile, atan2 and the
    small epsilons need it); float32/float64 are returned unchanged.
    """
    if not isinstance(x, torch.Tensor):
        raise PerceptualInputError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise PerceptualInputError(f"{name}: expected a {ndim}-D tensor of shape {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise PerceptualInputError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise PerceptualInputError(f"{name}: empty batch (shape {tuple(x.shape)})")
    h, w = x.shape[-2], x.shape[-1]
    if h < min_hw or w < min_hw:
        raise PerceptualInputError(
            f"{name}: maps must be at least {min_hw}x{min_hw}, got {h}x{w} (shape {tuple(x.shape)})"
            + ("; HOG needs at least one 2x2 block of 4x4-pixel cells, never downsample below 8x8" if min_hw == HOG_MIN_SIZE else "")
        )
    if finite:
        _check_finite(x, name, blocking)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _check_finite(x: torch.Tensor, name: str, blocking: bool = True) -> None:
    """Refuse NaN or infinite values. ``blocking=True`` (a user's call): reads the test into Python and raises
    :class:`PerceptualInputError`, a host sync. ``blocking=False`` (inside a training step, issue 31): the test stays
    on the device, ``torch._assert_async``, a ``RuntimeError`` with the same message, at once on the CPU and at the
    GPU's next sync."""
    if not x.numel():
        return
    finite = torch.isfinite(x.detach()).all()
    if not blocking:
        torch._assert_async(finite, f"{name}: contains NaN or infinite values")
    elif not bool(finite):
        raise PerceptualInputError(f"{name}: contains NaN or infinite values")


def _check_pair(a, b, min_hw: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    a = _check(a, "a", 3, "(N, H, W)", min_hw)
    b = _check(b, "b", 3, "(N, H, W)", min_hw)
    if a.shape != b.shape:
        raise PerceptualInputError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        dt = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dt), b.to(dt)
    return a, b


def _check_positive(value, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise PerceptualInputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_q(q) -> float:
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 <= q <= 1.0:
        raise PerceptualInputError(f"q must be a quantile in [0, 1], got {q!r}")
    return float(q)


def _check_reduction(reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise PerceptualInputError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    return reduction


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


# --------------------------------------------------------------------------- maps


def reduce_feature_map(x: torch.Tensor) -> torch.Tensor:
    """Channel mean of a feature map: ``(N, C, H, W) -> (N, H, W)``.

    Paper Algorithm 1 (``Sobel(mean(f))``); the taps are post-ReLU, so the map
    is non-negative.
    """
    return _CHANNEL_MAPS["feature"](_check(x, "x", 4, "(N, C, H, W)"))


def reduce_input_gradient(g: torch.Tensor) -> torch.Tensor:
    """Channel mean of the absolute input gradient: ``(N, C, H, W) -> (N, H, W)``.

    Used for GPDP (eq. 3). ``|g|`` has gradient ``sign(g)`` (0 at 0), which is finite.
    """
    return _CHANNEL_MAPS["gradient"](_check(g, "g", 4, "(N, C, H, W)"))


#: One map per sample from ``(N, C, H, W)``, unchecked: the bodies of the two functions above (and of :func:`to_map`).
_CHANNEL_MAPS = {"feature": lambda x: x.mean(dim=1), "gradient": lambda g: g.abs().mean(dim=1)}


def minmax_normalize(m: torch.Tensor, eps: float = 1e-12, *, blocking: bool = True) -> torch.Tensor:
    """Per-sample min-max normalisation to ``[0, 1]``: ``(N, H, W) -> (N, H, W)``.

    ``(m - min) / (max - min)``. A map whose range ``max - min`` is ``<= eps``
    is treated as constant and mapped to zeros, with a zero (finite) gradient;
    the division uses a safe denominator, so no NaN reaches the backward pass.
    Input gradients are tiny (and ``k = 100`` in :func:`soft_binarize`
    assumes a fixed range), hence the normalisation (docs/design.md#one-map-per-sample).
    ``blocking=False``: the finite-value check without a host sync (:func:`_check_finite`).
    """
    return _minmax(_check(m, "m", 3, "(N, H, W)", blocking=blocking), float(eps))


def _minmax(m: torch.Tensor, eps: float) -> torch.Tensor:
    flat = m.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1)
    rng = hi - lo
    ok = rng > eps
    denom = torch.where(ok, rng, torch.ones_like(rng))
    return (m - lo) / denom * ok.to(m.dtype)


def to_map(x: torch.Tensor, kind: str = "feature", eps: float = 1e-12, *, blocking: bool = True) -> torch.Tensor:
    """One normalised map per sample: ``(N, C, H, W) -> (N, H, W)`` in ``[0, 1]``.

    ``kind="feature"``: :func:`reduce_feature_map` (FDP, eq. 2);
    ``kind="gradient"``: :func:`reduce_input_gradient` (GPDP, eq. 3);
    then :func:`minmax_normalize`. ``blocking=False``: the finite-value check without a host sync
    (:func:`_check_finite`), for a training step.
    """
    if kind not in _CHANNEL_MAPS:
        raise PerceptualInputError(f"kind must be 'feature' or 'gradient', got {kind!r}")
    m = _CHANNEL_MAPS[kind](_check(x, "x", 4, "(N, C, H, W)", finite=False))
    _check_finite(m, "x", blocking)  # a NaN or inf in x reaches its channel mean: C times fewer elements to check
    return _minmax(m, float(eps))


# --------------------------------------------------------------------------- edges


def _sobel_kernels(dtype: torch.dtype, device: torch.device, normalized: bool) -> torch.Tensor:
    # built on the host and copied without a wait (a tensor built on a GPU from a list is a synchronous copy)
    gx = host_to_device(torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=dtype), device)
    if normalized:
        gx = gx / 8.0
    return torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy


def sobel_edges(m: torch.Tensor, eps: float = 1e-12, normalized: bool = True) -> torch.Tensor:
    """Sobel edge magnitude ``E`` of eq. 2 / eq. 3: ``(N, H, W) -> (N, H, W)``.

    ``sqrt(gx**2 + gy**2 + eps)``; ``eps`` keeps the gradient of the square
    root finite where the map is flat. Padding is **replicate** (as in
    ``kornia.filters.sobel``): zero padding would put artificial edges on the
    border of every non-zero map, which then fill the top 15 % of the edge
    map and inflate every similarity. With ``normalized=True`` (default, as
    kornia) the kernels are divided by 8, so a map in ``[0, 1]`` gives
    magnitudes in ``[0, sqrt(2)/2]`` (the scale ``k = 100`` of
    :func:`soft_binarize` acts on).
    """
    return _sobel(_check(m, "m", 3, "(N, H, W)"), float(eps), normalized)


def _sobel(m: torch.Tensor, eps: float, normalized: bool) -> torch.Tensor:
    x = F.pad(m.unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(x, _sobel_kernels(m.dtype, m.device, normalized))
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2 + eps)


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample ``q``-quantile of ``(N, H, W)`` (linear interpolation), shape ``(N, 1, 1)``."""
    return torch.quantile(x.flatten(1), q, dim=1).view(-1, 1, 1)


def soft_binarize(e: torch.Tensor, k: float = 100.0, q: float = 0.85, detach_threshold: bool = False) -> torch.Tensor:
    """Soft binarisation ``S(A) = sigmoid(k (A - tau))`` of eq. 2: ``(N, H, W) -> (N, H, W)``.

    ``tau`` is the per-sample ``q``-quantile of the flattened map
    (``torch.quantile``, linear interpolation). By default ``tau`` is **not**
    detached: the gradient is the exact gradient of eq. 2 as written (the
    quantile is a piecewise-linear function of two order statistics, so it
    has a gradient almost everywhere). ``detach_threshold=True`` treats
    ``tau`` as a constant, like a batch statistic.
    """
    return _soft_binarize(_check(e, "e", 3, "(N, H, W)"), _check_positive(k, "k"), _check_q(q), detach_threshold)


def _soft_binarize(e: torch.Tensor, k: float, q: float, detach_threshold: bool) -> torch.Tensor:
    tau = _quantile(e, q)
    if detach_threshold:
        tau = tau.detach()
    return torch.sigmoid(k * (e - tau))


def soft_dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SoftDice of eq. 2 / eq. 3: ``2 sum(a b) / (sum a + sum b + eps)`` per sample.

    ``a``, ``b``: ``(N, H, W)`` soft masks (values in ``[0, 1]``); returns ``(N,)``.
    Symmetric; about 1 for identical binary masks, 0 for disjoint ones, and
    0 for two empty masks.
    """
    a, b = _check_pair(a, b)
    return batched_soft_dice(a, b, eps)


def batched_soft_dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """:func:`soft_dice` without validation, over the last two dims: ``(..., H, W)`` x2 (broadcast) -> ``(...)``.

    The penalties' inner loop (:mod:`triqdef.losses`): one bit-width's masks
    ``(N, H, W)`` against a stack of the others' ``(K, N, H, W)`` in one call.
    Its inputs come from :func:`soft_edge_hog`, which validated the maps.
    """
    fa, fb = a.flatten(-2), b.flatten(-2)
    return 2.0 * (fa * fb).sum(dim=-1) / (fa.sum(dim=-1) + fb.sum(dim=-1) + float(eps))


def soft_edge_dice(
    a: torch.Tensor,
    b: torch.Tensor,
    k: float = 100.0,
    q: float = 0.85,
    sobel_eps: float = 1e-12,
    eps: float = 1e-6,
    detach_threshold: bool = False,
) -> torch.Tensor:
    """``SoftDice(S(E(a)), S(E(b)))``, the first term of eq. 2 (and eq. 3): ``(N, H, W) x2 -> (N,)``.

    ``E`` is :func:`sobel_edges` (normalised kernels, replicate padding), ``S``
    is :func:`soft_binarize`. Because ``S`` is soft (``sum S^2 < sum S``), a
    map compared with itself scores below 1 (about 0.8-0.95 on CIFAR
    channel-mean maps with ``k = 100``); unrelated maps score about 0.15-0.2.
    """
    a, b = _check_pair(a, b)
    sa = soft_binarize(sobel_edges(a, sobel_eps), k, q, detach_threshold)
    sb = soft_binarize(sobel_edges(b, sobel_eps), k, q, detach_threshold)
    return soft_dice(sa, sb, eps)


def edge_iou(a: torch.Tensor, b: torch.Tensor, q: float = 0.85, sobel_eps: float = 1e-12) -> torch.Tensor:
    """Hard Edge IoU of eq. 1 / Table 3 / Table 12: ``(N, H, W) x2 -> (N,)``.

    Each map's Sobel magnitude (:func:`sobel_edges`) is binarised at its own
    per-sample ``q``-quantile ``tau`` (edge where ``E > tau``), then
    ``|A and B| / |A or B|``. If both edge sets are empty (e.g. two constant
    maps) the IoU is defined as **1** (two empty edge sets agree). Not
    differentiable (returns a tensor without a graph).
    """
    a, b = _check_pair(a, b)
    q = _check_q(q)
    with torch.no_grad():
        ea, eb = sobel_edges(a, sobel_eps), sobel_edges(b, sobel_eps)
        ba = (ea > _quantile(ea, q)).flatten(1)
        bb = (eb > _quantile(eb, q)).flatten(1)
        inter = (ba & bb).sum(dim=1).to(a.dtype)
        union = (ba | bb).sum(dim=1).to(a.dtype)
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# --------------------------------------------------------------------------- HOG


def _hog_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``skimage.feature._hog._hog_channel_gradient`` on a batch: central
    differences ``x[i+1] - x[i-1]`` (kernel [-1, 0, 1], not halved), 0 on the
    first and last row (``g_row``) / column (``g_col``)."""
    g_row = F.pad(x[:, 2:, :] - x[:, :-2, :], (0, 0, 1, 1))
    g_col = F.pad(x[:, :, 2:] - x[:, :, :-2], (1, 1, 0, 0))
    return g_row, g_col


def _cell_histograms(votes: torch.Tensor) -> torch.Tensor:
    """Mean of per-pixel votes ``(N, H, W, O)`` over 4x4 cells -> ``(N, nH, nW, O)``.

    Like skimage, the rows/columns beyond the last whole cell are dropped
    (but their neighbours' gradients still use them).
    """
    n, h, w, o = votes.shape
    nh, nw = h // HOG_CELL, w // HOG_CELL
    v = votes[:, : nh * HOG_CELL, : nw * HOG_CELL]
    return v.reshape(n, nh, HOG_CELL, nw, HOG_CELL, o).sum(dim=(2, 4)) / float(HOG_CELL * HOG_CELL)


def _blocks_l2hys(hist: torch.Tensor) -> torch.Tensor:
    """Overlapping 2x2-cell blocks (stride one cell), each L2-Hys normalised,
    flattened in skimage's order ``(n_blocks_row, n_blocks_col, 2, 2, O)`` -> ``(N, D)``.

    L2-Hys as ``skimage.feature._hog._hog_normalize_block``:
    ``v / sqrt(|v|^2 + eps^2)``, clip at 0.2, renormalise the same way (eps = 1e-5).
    """
    n, nh, nw, o = hist.shape
    nbr, nbc = nh - HOG_BLOCK + 1, nw - HOG_BLOCK + 1
    rows = []
    for dr in range(HOG_BLOCK):
        rows.append(torch.stack([hist[:, dr : dr + nbr, dc : dc + nbc] for dc in range(HOG_BLOCK)], dim=3))
    blocks = torch.stack(rows, dim=3).reshape(n, nbr, nbc, HOG_BLOCK * HOG_BLOCK * o)
    blocks = blocks / torch.sqrt((blocks**2).sum(dim=-1, keepdim=True) + _HYS_EPS**2)
    blocks = torch.clamp(blocks, max=_HYS_CLIP)
    blocks = blocks / torch.sqrt((blocks**2).sum(dim=-1, keepdim=True) + _HYS_EPS**2)
    return blocks.reshape(n, -1)


def hog(x: torch.Tensor) -> torch.Tensor:
    """Hard HOG descriptors, ``(N, H, W) -> (N, D)``, equal to skimage's.

    For each map ``x[i]`` the row equals (within float rounding)
    ``skimage.feature.hog(x[i], orientations=9, pixels_per_cell=(4, 4),
    cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True)``:

    * gradient: central differences ``[-1, 0, 1]`` in the input's float dtype,
      zero on the border rows/columns (``_hog_channel_gradient``);
    * magnitude ``hypot(g_col, g_row)`` and unsigned orientation
      ``rad2deg(arctan2(g_row, g_col)) % 180`` (θ mod 180°, not |θ|) in float64;
    * hard bins: a pixel votes its magnitude into bin ``i`` iff
      ``20 i <= orientation < 20 (i + 1)`` (an orientation that rounds to
      exactly 180.0 votes nowhere, as in ``_hoghistogram.hog_histograms``);
      a cell's value is the sum over its 4x4 pixels divided by 16;
      remainder rows/columns (H or W not a multiple of 4) are dropped;
    * blocks of 2x2 cells with stride one cell, L2-Hys (clip 0.2), flattened
      as ``(n_blocks_row, n_blocks_col, 2, 2, 9)``.

    ``D = (H//4 - 1) (W//4 - 1) * 36``; maps must be at least 8x8. The result
    has the input's dtype (float32 for half inputs, as skimage). It is not
    meant to be differentiated (use :func:`soft_hog`).
    """
    x = _check(x, "x", 3, "(N, H, W)", HOG_MIN_SIZE)
    g_row, g_col = _hog_gradients(x)
    g_row, g_col = g_row.double(), g_col.double()
    mag = torch.hypot(g_col, g_row)
    ori = torch.remainder(torch.rad2deg(torch.atan2(g_row, g_col)), 180.0)
    width = 180.0 / HOG_ORIENTATIONS
    lo = torch.arange(HOG_ORIENTATIONS, dtype=torch.float64, device=x.device) * width
    hi = lo + width
    o = ori.unsqueeze(-1)
    onehot = (o >= lo) & (o < hi)
    hist = _cell_histograms(mag.unsqueeze(-1) * onehot.double())
    return _blocks_l2hys(hist).to(x.dtype)


def soft_hog(
    x: torch.Tensor,
    temperature: float = DEFAULT_SOFT_HOG_TEMPERATURE,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Differentiable HOG ("SoftHOG", ``H`` of eq. 2 and eq. 3): ``(N, H, W) -> (N, D)``.

    Same layout, gradient, cells, blocks and L2-Hys as :func:`hog`; two changes:

    * **soft orientation assignment** (von Mises kernel on the doubled angle,
      normalised by a softmax): with ``θ = atan2(g_row, g_col)`` and bin
      centres ``μ_i = 20° i + 10°``, pixel weight for bin ``i`` is
      ``softmax_i(cos(2 (θ - μ_i)) / temperature)``. Doubling the angle makes
      it unsigned (θ and θ + 180° coincide: θ mod π, not |θ|) and circular,
      and ``cos 2θ = (g_col² - g_row²) / r²``, ``sin 2θ = 2 g_col g_row / r²``
      (``r² + eps`` in the denominator) are rational in the gradient, so no
      ``atan2`` (whose derivative is singular at ``r = 0``) is needed. As
      ``temperature -> 0`` the weights become skimage's hard bins; the default
      0.05 is about 2° wide at a bin boundary;
    * **smooth magnitude** ``sqrt(r² + eps) - sqrt(eps)``: 0 on flat
      regions (an all-zero or constant map gives an all-zero descriptor, like
      :func:`hog`) with a finite gradient there.

    The L2-Hys clip at 0.2 is kept as is: it is piecewise linear, so
    differentiable almost everywhere (gradient 0 above the clip). Passes
    ``torch.autograd.gradcheck`` in float64; mean cosine with skimage's
    descriptor above 0.97 on real images.
    """
    x = _check(x, "x", 3, "(N, H, W)", HOG_MIN_SIZE)
    return _soft_hog(x, _check_positive(temperature, "temperature"), _check_positive(eps, "eps"))


def _soft_hog(x: torch.Tensor, temperature: float, eps: float) -> torch.Tensor:
    g_row, g_col = _hog_gradients(x)
    r2 = g_row**2 + g_col**2
    mag = torch.sqrt(r2 + eps) - math.sqrt(eps)
    denom = r2 + eps
    cos2 = (g_col**2 - g_row**2) / denom
    sin2 = 2.0 * g_col * g_row / denom
    centres = (torch.arange(HOG_ORIENTATIONS, dtype=x.dtype, device=x.device) + 0.5) * (2.0 * math.pi / HOG_ORIENTATIONS)
    logits = (cos2.unsqueeze(-1) * torch.cos(centres) + sin2.unsqueeze(-1) * torch.sin(centres)) / temperature
    weights = torch.softmax(logits, dim=-1)
    hist = _cell_histograms(mag.unsqueeze(-1) * weights)
    return _blocks_l2hys(hist)


def soft_edge_hog(
    m: torch.Tensor,
    k: float = 100.0,
    q: float = 0.85,
    temperature: float = DEFAULT_SOFT_HOG_TEMPERATURE,
    sobel_eps: float = 1e-12,
    hog_eps: float = 1e-12,
    *,
    blocking: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two descriptors of eq. 2 / eq. 3 of ``(N, H, W)`` maps: ``S(E(m))`` ``(N, H, W)`` and ``SoftHOG(m)`` ``(N, D)``.

    Equal to ``soft_binarize(sobel_edges(m), k, q)`` and ``soft_hog(m)``, with
    ``m`` and the parameters validated once instead of at every stage (the
    checks, each a pass over the map and a host sync, were a quarter of FDP's
    cost per training step). ``blocking=False``: the finite-value check without a host sync
    (:func:`_check_finite`), for a training step.
    """
    m = _check(m, "m", 3, "(N, H, W)", HOG_MIN_SIZE, blocking=blocking)
    edges = _soft_binarize(_sobel(m, float(sobel_eps), True), _check_positive(k, "k"), _check_q(q), False)
    return edges, _soft_hog(m, _check_positive(temperature, "temperature"), _check_positive(hog_eps, "hog_eps"))


def descriptor_cosine(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise cosine of descriptors ``(..., D)`` (broadcast): ``u.v / max(|u| |v|, eps)``, ``(...)``; 0 (finite
    gradient) for a zero row. No validation (the penalties' inner loop, like :func:`batched_soft_dice`)."""
    return _cosine_rows(u, v, eps)


def _cosine_rows(u: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Row-wise cosine ``u.v / max(|u| |v|, eps)`` over the last dim; 0 (finite gradient) for a zero row."""
    dot = (u * v).sum(dim=-1)
    nn2 = (u * u).sum(dim=-1) * (v * v).sum(dim=-1)
    return dot / torch.sqrt(torch.clamp(nn2, min=float(eps) ** 2))


def hog_cosine(
    a: torch.Tensor,
    b: torch.Tensor,
    soft: bool = True,
    temperature: float = DEFAULT_SOFT_HOG_TEMPERATURE,
    eps: float = 1e-12,
) -> torch.Tensor:
    """HOG cosine similarity per sample: ``(N, H, W) x2 -> (N,)``.

    ``soft=True``: ``cos(SoftHOG(a), SoftHOG(b))``, the second term of eq. 2
    and eq. 3 (differentiable). ``soft=False``: the hard HOG cosine of eq. 1,
    Table 3 and Table 12 (skimage's descriptor). A zero descriptor (flat map)
    gives cosine 0.
    """
    a, b = _check_pair(a, b, HOG_MIN_SIZE)
    both = torch.cat([a, b], dim=0)
    d = soft_hog(both, temperature, eps) if soft else hog(both)
    da, db = d[: a.shape[0]], d[a.shape[0] :]
    return _cosine_rows(da, db, 1e-12)


def cosine_similarity_maps(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Plain cosine similarity of the flattened maps per sample (Table 3's "cosine"): ``(N, H, W) x2 -> (N,)``.

    ``a.b / max(|a| |b|, eps)``; 0 if a map is all zero.
    """
    a, b = _check_pair(a, b)
    return _cosine_rows(a.flatten(1), b.flatten(1), eps)


def perceptual_similarity(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 1.0,
    k: float = 100.0,
    q: float = 0.85,
    temperature: float = DEFAULT_SOFT_HOG_TEMPERATURE,
    sobel_eps: float = 1e-12,
    dice_eps: float = 1e-6,
    hog_eps: float = 1e-12,
    detach_threshold: bool = False,
) -> torch.Tensor:
    """The bracket of eq. 2 (FDP) and eq. 3 (GPDP) for one pair of bit-widths, per sample:

    ``alpha * SoftDice(S(E(a)), S(E(b))) + beta * cos(SoftHOG(a), SoftHOG(b))``.

    ``a``, ``b``: ``(N, H, W)`` maps from :func:`to_map`, at least 8x8;
    returns ``(N,)``. ``S`` is applied in both penalties (docs/design.md#soft-binarisation-in-both-penalties).
    """
    a, b = _check_pair(a, b, HOG_MIN_SIZE)
    dice = soft_edge_dice(a, b, k, q, sobel_eps, dice_eps, detach_threshold)
    cos = hog_cosine(a, b, soft=True, temperature=temperature, eps=hog_eps)
    return alpha * dice + beta * cos


# --------------------------------------------------------------------------- chance level


def derangement(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation of ``range(n)`` with no fixed point (uniform over derangements), ``n >= 2``."""
    if not isinstance(n, int) or n < 2:
        raise PerceptualInputError(f"a derangement needs at least 2 samples, got {n!r}")
    for _ in range(100):  # P(derangement) ~ 1/e per draw
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm.to(device) if device is not None else perm
    # Practically unreachable: shift a random permutation by one (still a derangement).
    perm = torch.randperm(n, generator=generator)
    out = torch.empty_like(perm)
    out[perm] = perm.roll(1)
    return out.to(device) if device is not None else out


def chance_baseline(
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Chance level of a similarity: ``metric(a, b[perm])`` with ``perm`` a derangement.

    Every sample of ``a`` is paired with the map of a *different* sample of
    ``b`` (no sample with itself), so the value is what the metric gives for
    unrelated images. Every similarity table and heatmap reports it next to
    the metric (docs/design.md#chance-baseline; e.g. two random 32x32 maps have a HOG cosine of
    about 0.65-0.70). ``metric`` maps two ``(N, ...)`` tensors to ``(N,)``;
    ``a`` and ``b`` need the same batch size ``N >= 2``. Computed without a
    graph (``torch.no_grad``); returns the ``(N,)`` values (average them).
    """
    if not callable(metric):
        raise PerceptualInputError(f"metric must be callable, got {type(metric).__name__}")
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise PerceptualInputError(f"{name}: expected a batched tensor (N, ...), got {type(t).__name__}")
    if a.shape[0] != b.shape[0]:
        raise PerceptualInputError(f"a and b must have the same batch size, got {a.shape[0]} and {b.shape[0]}")
    perm = derangement(int(a.shape[0]), generator).to(b.device)
    with torch.no_grad():
        return metric(a, b[perm])


# --------------------------------------------------------------------------- modules


class _PairMetric(nn.Module):
    """A pairwise metric function as a module: ``(N, H, W) x2 -> (N,)``, reduced by ``reduction``.

    Keyword arguments are the function's own (same names, same defaults: they are
    not repeated here); ``metric`` is the function.
    """

    metric: Callable[..., torch.Tensor]

    def __init__(self, reduction: str = "mean", **kwargs) -> None:
        super().__init__()
        inspect.signature(type(self).metric).bind(None, None, **kwargs)  # unknown keyword -> TypeError, as the function
        self.reduction = _check_reduction(reduction)
        self.kwargs = kwargs

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _reduce(type(self).metric(a, b, **self.kwargs), self.reduction)

    def extra_repr(self) -> str:
        return ", ".join([*(f"{k}={v}" for k, v in self.kwargs.items()), f"reduction={self.reduction!r}"])


def _module_form(name: str, metric: Callable[..., torch.Tensor], doc: str) -> type[_PairMetric]:
    """A :class:`_PairMetric` subclass named ``name`` that computes ``metric``."""
    return type(name, (_PairMetric,), {"metric": staticmethod(metric), "__doc__": doc, "__module__": __name__})


SoftDice = _module_form("SoftDice", soft_dice, "Module form of :func:`soft_dice` (eq. 2 / eq. 3).")
SoftEdgeDice = _module_form("SoftEdgeDice", soft_edge_dice, "Module form of :func:`soft_edge_dice`: ``SoftDice(S(E(a)), S(E(b)))`` (eq. 2).")
EdgeIoU = _module_form("EdgeIoU", edge_iou, "Module form of :func:`edge_iou` (hard, not differentiable).")
HOGCosine = _module_form("HOGCosine", hog_cosine, "Module form of :func:`hog_cosine` (eq. 2 / eq. 3 second term when ``soft=True``).")
MapCosine = _module_form("MapCosine", cosine_similarity_maps, "Module form of :func:`cosine_similarity_maps`.")
PerceptualSimilarity = _module_form("PerceptualSimilarity", perceptual_similarity, "Module form of :func:`perceptual_similarity`: ``alpha * SoftEdgeDice + beta * SoftHOG cosine`` (eq. 2 / eq. 3).")
