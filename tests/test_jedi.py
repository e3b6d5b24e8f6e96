"""The Jedi-style preprocessing (triqdef.eval.jedi): entropy against skimage, the mask finds a patch, inpainting."""
import numpy as np
import pytest
import torch

from triqdef.errors import TriqdefError
from triqdef.eval.jedi import JediPreprocess, JediSettings, diffusion_inpaint, entropy_mask, grey_levels, local_entropy


@pytest.mark.parametrize("window,bins", [(3, 8), (5, 16)])
def test_local_entropy_equals_skimage_rank_entropy(window, bins):
    from skimage.filters.rank import entropy
    from skimage.morphology import footprint_rectangle

    g = torch.Generator().manual_seed(window)
    images = torch.rand(3, 3, 20, 17, generator=g)
    images[0, :, :10] = 0.5  # a flat region: entropy 0 there
    levels = grey_levels(images, bins)
    ours = local_entropy(levels, bins, window).numpy()
    for i in range(3):
        ref = entropy(levels[i].numpy().astype(np.uint8), footprint_rectangle((window, window)))
        np.testing.assert_allclose(ours[i], ref, atol=1e-6)


def test_the_mask_finds_a_noise_patch_on_a_smooth_image_and_inpainting_removes_it():
    ramp = torch.linspace(0, 1, 32)
    image = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32), torch.full((32, 32), 0.3)])[None]
    patched = image.clone()
    patched[0, :, 10:18, 12:20] = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    s = JediSettings(window=5, bins=16, threshold_std=1.0, dilate=1, steps=200)
    mask = entropy_mask(patched, s)[0, 0]
    inside = mask[10:18, 12:20].float().mean()
    outside = (mask.sum() - mask[10:18, 12:20].sum()) / (32 * 32 - 64)
    assert inside > 0.9 and outside < 0.1
    cleaned = diffusion_inpaint(patched, mask[None, None].expand(1, 3, 32, 32), s.steps)
    before = (patched - image)[0, :, 10:18, 12:20].abs().mean()
    after = (cleaned - image)[0, :, 10:18, 12:20].abs().mean()
    assert after < 0.25 * before and torch.equal(cleaned[0, :, 25:, 25:], patched[0, :, 25:, 25:])


def test_the_wrapper_cleans_before_the_model_and_bad_settings_are_refused():
    seen = []
    model = torch.nn.Flatten()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    JediPreprocess(model, JediSettings())(x)
    assert not torch.equal(seen[0], x)
    for kwargs, needle in (({"window": 4}, "window"), ({"bins": 1}, "bins"), ({"dilate": -1}, "dilate"),
                           ({"steps": 0}, "steps")):
        with pytest.raises(TriqdefError, match=needle):
            JediSettings(**kwargs)


def test_a_switchable_precision_model_keeps_its_bit_widths_behind_the_wrapper():
    from helpers import calibrated_resnet20
    from triqdef import quant

    model, _ = calibrated_resnet20(bits=(32, 4))
    wrapped = JediPreprocess(model.eval(), JediSettings())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with quant.use_bitwidth(wrapped, 4):
        out4 = wrapped(x)
    with quant.use_bitwidth(model, 4):
        direct = model(JediPreprocess(torch.nn.Identity(), JediSettings())(x))
    assert quant.model_bits(wrapped) == (32, 4) and torch.allclose(out4, direct)
