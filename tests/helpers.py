"""Small models the tests share (imported as ``helpers``: pytest puts tests/ on the path)."""

import torch

from triqdef import quant
from triqdef.models import build_model


def calibrated_resnet20(bits=(32, 8, 4), n_images: int = 8, seed: int = 0):
    """A switchable-precision ResNet-20 (seeded weights, ``max`` ranges) calibrated at every bit-width of
    ``bits`` on ``n_images`` random images; returns the model and those images."""
    torch.manual_seed(seed)
    m = quant.quantize_model(build_model("resnet20"), list(bits), range_estimator="max")
    x = torch.rand(n_images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for b in bits:
        if b != 32:
            quant.calibrate(m, [x], b)
    return m, x


class LabelNet(torch.nn.Module):
    """Predicts the label written in pixel (1, 10, 10); class 1 when the top-left pixel is bright (a patch)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.nn.functional.one_hot((x[:, 1, 10, 10] * 9).round().long(), 10).float()
        logits[x[:, 0, 0, 0] > 0.99] = torch.nn.functional.one_hot(torch.tensor(1), 10).float()
        return logits + 0 * self.w


class TinyNet(torch.nn.Module):
    """Colour classifier on 16x16 images: conv, ReLU, spatial max, linear (a patch can take over the max)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).amax((2, 3)))


def tiny_trained():
    """A small model trained to tell 4 colour classes apart."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 4
    colours = torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8], [0.7, 0.7, 0.2]])
    x = (colours[labels][:, :, None, None] + 0.1 * torch.randn(256, 3, 16, 16, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), 0.02)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    assert (model(x).argmax(1) == labels).float().mean() > 0.95
    return model.eval(), x, labels


def outcome_rows(model, set_, attack, bits, rates, seed, wrong=None, first_id=0, n=1500, exact=False):
    """Synthetic outcome-store rows (:mod:`triqdef.eval.outcome_store`) of one (model, set, attack, view): patch i
    targets class i % 10 and hits a share ``rates[i]`` of the ``n`` images (a seeded draw; ``exact``: the first
    ``rates[i]`` share of its eligible images, so that the rate is exact); ``wrong``: a boolean mask of the images
    the model gets wrong without the patch. Returns a list of frames, one per patch."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    clean = labels.copy()
    if wrong is not None:
        clean[wrong] = (labels[wrong] + 1) % 10
    out = []
    for i, r in enumerate(rates):
        target = i % 10
        hit = rng.random(n) < r
        if exact:
            eligible = (clean == labels) & (labels != target)
            hit = eligible & (np.cumsum(eligible) <= round(r * eligible.sum()))
        out.append(pd.DataFrame({"model": model, "seed": 0, "bits": bits, "attack": attack, "set": set_,
                                 "patch_id": first_id + i, "target": target, "loc_y": 1, "loc_x": 2,
                                 "image_id": np.arange(n), "label": labels, "clean_pred": clean,
                                 "patched_pred": np.where(hit, target, clean)}))
    return out


def outcome_store_of(parts):
    """One validated store from lists of :func:`outcome_rows` frames."""
    import pandas as pd

    from triqdef.eval.outcome_store import validate

    return validate(pd.concat([p for part in parts for p in part], ignore_index=True))
