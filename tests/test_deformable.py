"""DPR (triqdef.attacks.deformable, the optimiser's ``dpr`` recipe): the mask's geometry, the area budget, the
attack's reach, batched against alone, bad input."""

import math

import pytest
import torch

from helpers import tiny_trained
from triqdef.attacks.deformable import deformable_mask, project_to_budget
from triqdef.attacks.universal import PatchRequest, optimise_patches, recipe
from triqdef.attacks.patches import Patch, apply_patch
from triqdef.attacks.success import targeted_asr
from triqdef.errors import TriqdefError


def test_equal_radii_give_a_disc_of_the_right_area_and_the_mask_is_differentiable():
    size, r = 24, 6.0
    center = torch.tensor([12.0, 12.0], requires_grad=True)
    radii = torch.full((8,), r, requires_grad=True)
    mask = deformable_mask(center, radii, size, sharpness=8.0)
    assert mask.shape == (1, size, size) and 0 <= mask.min() and mask.max() <= 1
    assert mask.mean().item() == pytest.approx(math.pi * r**2 / size**2, rel=0.03)
    assert mask[0, 12, 12] > 0.99 and mask[0, 0, 0] < 0.01
    mask.sum().backward()
    assert radii.grad.abs().sum() > 0 and torch.isfinite(center.grad).all()


def test_a_longer_sector_radius_reaches_further_in_its_direction_only():
    size = 24
    center = torch.tensor([12.0, 12.0])
    radii = torch.full((8,), 4.0)
    radii[0] = 10.0  # angle 0: along +col
    mask = deformable_mask(center, radii, size, sharpness=8.0)[0]
    assert mask[12, 20] > 0.9 and mask[20, 12] < 0.1 and mask[12, 4] < 0.1


@pytest.mark.parametrize("budget", [0.1, 0.3, 0.6])
def test_the_projection_meets_the_area_budget(budget):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        center = torch.rand(2, generator=g) * 8
        radii = torch.rand(6, generator=g) * 8
        c, r = project_to_budget(center, radii, 8, budget)
        assert deformable_mask(c, r, 8).mean() <= budget + 1e-6
        assert (r <= radii.clamp(0, 8) + 1e-6).all()
    small = torch.full((6,), 0.5)
    assert torch.equal(project_to_budget(torch.tensor([4.0, 4.0]), small, 8, 0.6)[1], small)


DPR = dict(method="adam", steps=40, step_size=0.1, images_per_patch=32, area_budget=0.6)


def test_a_dpr_patch_on_a_tiny_model_reaches_the_target_and_keeps_its_budget():
    """TinyNet classifies by the spatial max of its features: a shaped 6x6 patch at a fixed corner, covering at
    most 60 % of its box, must take most images to the target, where the same mask with random texture moves
    few (the test has teeth)."""
    model, x, labels = tiny_trained()
    (patch,) = optimise_patches(model, x, labels, 6, [PatchRequest(2, seed=3, border=0, location=(0, 0),
                                                                   fixed_location=True)], recipe("dpr", **DPR))
    assert patch.attack == "dpr" and patch.mask is not None
    assert patch.mask.mean() <= 0.6 + 1e-6 and patch.info["mask_area"] <= 0.6 + 1e-6
    noise = Patch(torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1)), (0, 0), 2, "dpr", "tiny", None,
                  {}, patch.mask)
    with torch.no_grad():
        clean = model(x).argmax(1)
        rates = [targeted_asr(clean, model(apply_patch(x, p)).argmax(1), labels, 2) for p in (patch, noise)]
    assert rates[0].value >= 0.9 and rates[1].value <= 0.2
    restored = Patch.from_dict(patch.to_dict())
    assert torch.equal(restored.mask, patch.mask) and torch.equal(apply_patch(x, restored), apply_patch(x, patch))


def test_dpr_patches_optimised_together_equal_each_optimised_alone():
    """The one optimiser's promise holds for shaped patches: content, mask and location as a run of one."""
    model, x, labels = tiny_trained()
    opt = recipe("dpr", **dict(DPR, steps=5))
    requests = [PatchRequest(1, seed=5, border=0), PatchRequest(3, seed=6, border=0)]
    together = optimise_patches(model, x, labels, 6, requests, opt)
    for req, p in zip(requests, together):
        (alone,) = optimise_patches(model, x, labels, 6, [req], opt)
        assert torch.allclose(alone.content, p.content, atol=1e-5) and torch.allclose(alone.mask, p.mask, atol=1e-5)
        assert alone.location == p.location and p.mask.mean() <= 0.6 + 1e-6


@pytest.mark.parametrize("kwargs,needle", [({"area_budget": 0.0}, "area budget"), ({"area_budget": 1.5}, "area budget"),
                                           ({"sectors": 2}, "sectors"), ({"steps": 0}, "steps"),
                                           ({"loss": "hinge"}, "loss"), ({"shape_step_size": 0.0}, "shape_step_size")])
def test_bad_settings_are_refused(kwargs, needle):
    with pytest.raises(TriqdefError, match=needle):
        recipe("dpr", **{"steps": 1, "step_size": 0.1, "images_per_patch": 1, **kwargs})


def test_a_square_patch_keeps_its_file_format():
    d = Patch(torch.zeros(3, 4, 4), (1, 2), 3, "lavan", "resnet20", None).to_dict()
    assert "mask" not in d and Patch.from_dict(d).mask is None
