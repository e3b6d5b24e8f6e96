"""Cross-bit-width alignment of feature maps and input gradients (paper section 2, Table 3, Table 12, Figure 2).

A *view* is a model evaluated at one bit-width: ``(model, bits)`` with
``bits=None`` for a float model. For a batch of images each view yields

* feature maps at the FDP tap layers (post-ReLU output of ``conv1`` in the
  first block of each stage, docs/design.md#fdp-taps), reduced to one normalised map
  per sample (channel mean, per-sample min-max);
* input gradients of the cross-entropy, reduced the same way (channel mean
  of ``|g|``).

Pairs of views are then compared with plain cosine, Edge IoU, SoftDice of
soft edges, HOG cosine and SoftHOG cosine, each beside its chance baseline:
the same metric between maps of *different* images (a derangement).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import perceptual as P
from triqdef import quant
from triqdef.taps import tap_outputs

#: Names the paper's Table 12 uses for the FDP tap layers (the layers themselves: ``triqdef.taps`` in params.yaml,
#: :meth:`triqdef.config.TriQDefParams.taps_of`; docs/design.md#fdp-taps).
TAP_LABELS = {"layer1.0.relu1": "L0.conv1", "layer2.0.relu1": "L1.conv1", "layer3.0.relu1": "L2.conv1"}

METRICS = {
    "cosine": lambda a, b: P.cosine_similarity_maps(a, b),
    "edge_iou": lambda a, b: P.edge_iou(a, b),
    "soft_dice": lambda a, b: P.soft_edge_dice(a, b),
    "hog_cosine": lambda a, b: P.hog_cosine(a, b, soft=False),
    "soft_hog_cosine": lambda a, b: P.hog_cosine(a, b, soft=True),
}


@torch.no_grad()
def feature_maps(model: nn.Module, images: torch.Tensor, bits: int | None, taps: Sequence[str]) -> dict[str, torch.Tensor]:
    """Normalised (N, H, W) maps at each tap layer of ``model`` at ``bits`` (eval mode)."""
    with tap_outputs(model, taps, transform=lambda o: P.to_map(o.detach(), "feature")) as out, quant.eval_mode(model), \
            quant.use_bitwidth(model, bits):
        model(images)
    return out


def input_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Raw input gradients ∇_x CE(f_b(x), y), shape (N, 3, H, W), of ``model`` at ``bits`` (eval mode)."""
    x = images.clone().requires_grad_(True)
    with quant.eval_mode(model), quant.use_bitwidth(model, bits):
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g.detach()


def compare_items(a: torch.Tensor, b: torch.Tensor, metrics: Iterable[str],
                  generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each metric between paired maps ``a[i]``, ``b[i]`` and its chance baseline (deranged pairs), per sample:
    ``(N,)`` each."""
    out = {}
    for name in metrics:
        fn = METRICS[name]
        with torch.no_grad():
            out[name] = (fn(a, b), P.chance_baseline(fn, a, b, generator=generator))
    return out


def compare(a: torch.Tensor, b: torch.Tensor, metrics: Iterable[str], generator: torch.Generator) -> dict[str, dict[str, float]]:
    """Mean of each metric between paired maps ``a[i]``, ``b[i]`` and its chance baseline (deranged pairs)."""
    return {name: {"value": same.mean().item(), "chance": chance.mean().item()}
            for name, (same, chance) in compare_items(a, b, metrics, generator).items()}


def raw_gradient_cosine(ga: torch.Tensor, gb: torch.Tensor) -> torch.Tensor:
    """Cosine of the flattened raw input gradients, per sample (Table 3's "Cosine")."""
    return F.cosine_similarity(ga.flatten(1), gb.flatten(1), dim=1, eps=1e-20)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chance_measure(metric: str) -> str:
    """The measurement-store name of ``metric``'s chance baseline."""
    return f"{metric} (chance)"


#: Table 3's model column in a measurement store, and Figure 2's (the views are bit-width pairs of these).
GRADIENTS, FEATURES = "input gradients", "standard QAT features"


def _item_rows(measure: str, model: str, view: str, values: torch.Tensor) -> pd.DataFrame:
    v = values.detach().double().cpu().numpy()
    return pd.DataFrame({"measure": measure, "model": model, "view": view, "item": range(len(v)), "value": v})


def gradient_similarity_items(views: Mapping[str, tuple[nn.Module, int | None]], images: torch.Tensor,
                              labels: torch.Tensor, seed: int) -> pd.DataFrame:
    """Table 3's measurements per image (a measurement store's rows, :mod:`triqdef.eval.measure_store`): for every
    pair of ``views`` (view: the pair label) the cosine of the raw gradients
    (:data:`~triqdef.reporting.schemas.RAW_COSINE`), then Edge IoU and HOG cosine of the gradient maps (channel
    mean of ``|g|``, min-max normalised), each with its chance baseline (:func:`chance_measure`: the same metric
    between gradients of different images, a derangement drawn from a generator seeded with ``seed``, afresh for
    each comparison). ``images`` are floats in [0, 1]; item ``i`` is the ``i``-th image."""
    from triqdef.reporting import schemas as S

    grads = {k: input_gradients(m, images, labels, b) for k, (m, b) in views.items()}
    gmaps = {k: P.to_map(g, "gradient") for k, g in grads.items()}
    frames = []
    for a, b in combinations(views, 2):
        pair = S.pair_label(a, b)
        perm = P.derangement(len(labels), _generator(seed))
        frames += [_item_rows(S.RAW_COSINE, GRADIENTS, pair, raw_gradient_cosine(grads[a], grads[b])),
                   _item_rows(chance_measure(S.RAW_COSINE), GRADIENTS, pair, raw_gradient_cosine(grads[a], grads[b][perm]))]
        for metric, (same, chance) in compare_items(gmaps[a], gmaps[b], [S.EDGE_IOU, S.HOG_COSINE], _generator(seed)).items():
            frames += [_item_rows(metric, GRADIENTS, pair, same), _item_rows(chance_measure(metric), GRADIENTS, pair, chance)]
    return pd.concat(frames, ignore_index=True)


def gradient_table(items: pd.DataFrame) -> pd.DataFrame:
    """Table 3 from its measurements (:func:`gradient_similarity_items`): one row per (pair, metric), the mean over
    images beside the mean chance baseline and their difference."""
    from triqdef.reporting import schemas as S

    rows = []
    grad = items[items["model"] == GRADIENTS]
    for pair in dict.fromkeys(grad["view"]):
        mine = grad[grad["view"] == pair]
        for metric in [m for m in dict.fromkeys(mine["measure"]) if not m.endswith(" (chance)")]:
            rows.append({S.PAIR: pair, S.METRIC: metric, S.VALUE: mine.loc[mine["measure"] == metric, "value"].mean(),
                         S.CHANCE: mine.loc[mine["measure"] == chance_measure(metric), "value"].mean()})
    table = pd.DataFrame(rows, columns=[S.PAIR, S.METRIC, S.VALUE, S.CHANCE])
    table[S.ABOVE_CHANCE] = table[S.VALUE] - table[S.CHANCE]
    return table


def gradient_similarity(views: Mapping[str, tuple[nn.Module, int | None]], images: torch.Tensor, labels: torch.Tensor,
                        seed: int) -> pd.DataFrame:
    """Table 3: input-gradient similarity between every pair of ``views``, each beside its chance baseline
    (:func:`gradient_table` of :func:`gradient_similarity_items`)."""
    return gradient_table(gradient_similarity_items(views, images, labels, seed))


def feature_alignment_items(model: nn.Module, inputs: Mapping[str, torch.Tensor], bits: Sequence[int],
                            taps: Sequence[str], seed: int) -> pd.DataFrame:
    """Figure 2 / Table 12 measurements per image (a measurement store's rows): every metric of :data:`METRICS`
    between the feature maps of ``model`` at each pair of ``bits`` (``bi`` before ``bj`` in ``bits``), at each tap,
    for each batch of ``inputs`` (name -> float images in [0, 1], e.g. clean and patched), with its chance baseline
    (a generator seeded with ``seed`` for each comparison). The view is ``"<input>|<tap>|<pair>"``, the tap named
    by :data:`TAP_LABELS`."""
    from triqdef.reporting import schemas as S

    bits = list(bits)
    fmaps = {kind: {b: feature_maps(model, x, b, taps) for b in bits} for kind, x in inputs.items()}
    frames = []
    for kind in inputs:
        for tap in taps:
            for i, bi in enumerate(bits):
                for bj in bits[i + 1:]:
                    view = f"{kind}|{TAP_LABELS.get(tap, tap)}|{S.pair_label(bi, bj)}"
                    res = compare_items(fmaps[kind][bi][tap], fmaps[kind][bj][tap], list(METRICS), _generator(seed))
                    for metric, (same, chance) in res.items():
                        frames += [_item_rows(metric, FEATURES, view, same),
                                   _item_rows(chance_measure(metric), FEATURES, view, chance)]
    return pd.concat(frames, ignore_index=True)


def feature_records(items: pd.DataFrame) -> pd.DataFrame:
    """Figure 2 / Table 12 records from their measurements (:func:`feature_alignment_items`): columns ``input, tap,
    pair, metric, value, chance``, the means over images."""
    from triqdef.reporting import schemas as S

    feat = items[items["model"] == FEATURES]
    means = feat.groupby(["view", "measure"], sort=False)["value"].mean()
    records = []
    for view in dict.fromkeys(feat["view"]):
        kind, tap, pair = view.split("|")
        for metric in [m for m in METRICS if (view, m) in means.index]:
            records.append({S.INPUT: kind, S.TAP: tap, S.PAIR: pair, S.METRIC: metric, S.VALUE: means[(view, metric)],
                            S.CHANCE: means[(view, chance_measure(metric))]})
    return pd.DataFrame(records, columns=[S.INPUT, S.TAP, S.PAIR, S.METRIC, S.VALUE, S.CHANCE])


def feature_alignment(model: nn.Module, inputs: Mapping[str, torch.Tensor], bits: Sequence[int], taps: Sequence[str],
                      seed: int) -> pd.DataFrame:
    """Figure 2 / Table 12 records (:func:`feature_records` of :func:`feature_alignment_items`): columns
    ``input, tap, pair, metric, value, chance``."""
    return feature_records(feature_alignment_items(model, inputs, bits, taps, seed))


def hard_vs_soft_table(records: pd.DataFrame, pairs: Sequence[str], kind: str = "clean") -> pd.DataFrame:
    """Table 12: the :func:`feature_alignment` records of input ``kind`` and bit-width ``pairs``, one row per
    (tap, pair), columns ``"<metric> (value)"`` and ``"<metric> (chance)"`` (rounded to 3 digits) per metric."""
    from triqdef.reporting import schemas as S

    t = records[(records[S.INPUT] == kind) & records[S.PAIR].isin(list(pairs))].copy()
    t = t.pivot_table(index=[S.TAP, S.PAIR], columns=S.METRIC, values=[S.VALUE, S.CHANCE]).round(3)
    t = t[sorted(t.columns, key=lambda c: (c[1], c[0] != S.VALUE))]
    t.columns = [S.metric_column(m, v) for v, m in t.columns]
    return t.reset_index()
