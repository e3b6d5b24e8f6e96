"""The one patch optimiser (triqdef.attacks.universal): batched equals single, it reaches what it must, bad input."""

import pytest
import torch

from helpers import calibrated_resnet20, tiny_trained
from triqdef import quant
from triqdef.attacks.objectives import per_image_loss
from triqdef.attacks.patches import apply_patch
from triqdef.attacks.success import targeted_asr
from triqdef.attacks.universal import PatchRequest, _gradient, _Job, optimise_patches, recipe
from triqdef.errors import TriqdefError


def _images(n=48, seed=2, image_size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, image_size, image_size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _tiny_at_4_bits():
    """TinyNet with a 4-bit variant calibrated on its own images (16x16, 4 classes)."""
    model, x, labels = tiny_trained()
    model = quant.quantize_model(model, [32, 4])
    quant.calibrate(model, [x], 4)
    return model.eval(), x[:48], labels[:48]


@pytest.mark.parametrize("attack,method,loss", [("lavan", "sign", None), ("gap", "sign", None),
                                                ("lavan", "adam", "margin"), ("gap", "adam", "logprob")])
def test_a_batched_run_equals_k_single_runs(attack, method, loss):
    """K patches optimised together get the contents each gets alone (own seeds), to the bit here, also when the
    forward is split into chunks of whole patches; and the same gradients, up to the float rounding of a
    convolution over a larger batch (measured: <= 2.3e-8 on gradients of about 1e-2)."""
    model, x, y = _tiny_at_4_bits()
    opt = recipe(attack, loss=loss, method=method, steps=3, step_size=0.05, images_per_patch=6)
    requests = [PatchRequest(target=t, seed=10 + t, border=2 * (t % 2)) for t in range(3)]
    batched = optimise_patches(model, x, y, 5, requests, opt, bits=4)
    chunked = optimise_patches(model, x, y, 5, requests, recipe(attack, loss=loss, method=method, steps=3,
                                                                step_size=0.05, images_per_patch=6, max_batch=12),
                               bits=4)
    for k, request in enumerate(requests):
        (alone,) = optimise_patches(model, x, y, 5, [request], opt, bits=4)
        if method == "sign":  # a signed step ignores the last bits of the gradient
            assert torch.equal(batched[k].content, alone.content) and torch.equal(chunked[k].content, alone.content)
        else:
            torch.testing.assert_close(batched[k].content, alone.content, rtol=0, atol=1e-5)
            torch.testing.assert_close(chunked[k].content, alone.content, rtol=0, atol=1e-5)
        assert batched[k].location == alone.location and batched[k].target == request.target
    # gradients of one step from the same contents: batched == single, and not all zero
    contents = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    big, _ = calibrated_resnet20(bits=(32,))
    x, y = _images()

    def jobs(reqs):
        return [_Job(r, torch.Generator().manual_seed(r.seed), torch.arange(48), r.target) for r in reqs]

    grad, no_shape = _gradient(big.eval(), jobs(requests), contents, x, y, opt, torch.device("cpu"))
    assert no_shape is None  # square patches have no shape
    for k, request in enumerate(requests):
        alone, _ = _gradient(big, jobs([request]), contents[k:k + 1], x, y, opt, torch.device("cpu"))
        torch.testing.assert_close(grad[k], alone[0], rtol=1e-5, atol=1e-7)
        assert alone.abs().sum() > 0 and not torch.allclose(grad[k], grad[(k + 1) % 3])


def test_patches_differ_by_seed_and_start_inside_the_bounds():
    model, _ = calibrated_resnet20(bits=(32,))
    x, y = _images()
    opt = recipe("lavan", steps=2, step_size=0.05, images_per_patch=4)
    a, b = optimise_patches(model.eval(), x, y, 4, [PatchRequest(1, seed=1), PatchRequest(1, seed=2)], opt)
    assert not torch.equal(a.content, b.content)
    assert 0 <= a.content.min() and a.content.max() <= 1 and a.content.shape == (3, 4, 4)
    assert a.info["seed"] == 1 and a.info["steps"] == 2 and a.attack == "lavan" and a.source_bits is None


def test_a_fixed_location_patch_on_a_tiny_model_reaches_the_target():
    """TinyNet classifies by the spatial max of its features: a 4x4 patch at a fixed corner must take every
    image to the target (targeted ASR >= 95 % on the images it classifies correctly and whose label is not the
    target), where a random patch of the same size at the same place moves almost none (the test has teeth)."""
    model, x, labels = tiny_trained()
    target = 2
    opt = recipe("lavan", steps=40, step_size=0.1, images_per_patch=32)
    (patch,) = optimise_patches(model, x, labels, 4, [PatchRequest(target, 3, 0, (0, 0), True)], opt)
    noise = patch.moved((0, 0))
    noise.content = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = model(x).argmax(1)
        rates = [targeted_asr(clean, model(apply_patch(x, p)).argmax(1), labels, target) for p in (patch, noise)]
    assert patch.location == (0, 0) and rates[0].n > 150
    assert rates[0].value >= 0.95 and rates[1].value <= 0.2


def test_restarts_keep_the_best_start():
    model, _ = calibrated_resnet20(bits=(32,))
    x, y = _images()
    opt = recipe("lavan", steps=2, step_size=0.05, images_per_patch=4, restarts=3, select_images=16)
    (patch,) = optimise_patches(model.eval(), x, y, 4, [PatchRequest(3, seed=7)], opt)
    scores = patch.info["selection_success"]
    assert len(scores) == 3 and scores[patch.info["restart"]] == max(scores)
    (first,) = optimise_patches(model, x, y, 4, [PatchRequest(3, seed=7)],
                                recipe("lavan", steps=2, step_size=0.05, images_per_patch=4))
    restart0 = optimise_patches(model, x, y, 4, [PatchRequest(3, seed=7)],
                                recipe("lavan", steps=2, step_size=0.05, images_per_patch=4, restarts=3,
                                       select_images=16))[0]
    if restart0.info["restart"] == 0:  # restart 0 is the single run's start
        assert torch.equal(restart0.content, first.content)


def test_losses_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels, targets = torch.tensor([0, 1]), torch.tensor([2, 1])
    logp = torch.log_softmax(logits, 1)
    lp = per_image_loss("logprob", logits, labels, targets)
    assert torch.allclose(lp, torch.stack([-logp[0, 2] + logp[0, 0], -logp[1, 1]]))
    assert torch.allclose(per_image_loss("ce", logits, labels, targets), torch.stack([-logp[0, 2], -logp[1, 1]]))
    assert torch.equal(per_image_loss("margin", logits, labels, targets), torch.tensor([2.0, 0.0]))


@pytest.mark.parametrize("kw,size,requests,match", [
    ({"method": "lbfgs"}, 4, [PatchRequest(1, 1)], "method 'lbfgs'"),
    ({"loss": "hinge"}, 4, [PatchRequest(1, 1)], "loss 'hinge'"),
    ({"restarts": 0}, 4, [PatchRequest(1, 1)], "restarts=0"),
    ({}, 4, [], "K = 0"),
    ({}, 30, [PatchRequest(1, 1)], "does not fit"),
    ({}, 0, [PatchRequest(1, 1)], "patch size 0"),
    ({}, 4, [PatchRequest(1, 1, fixed_location=True)], "without a location"),
    ({}, 4, [PatchRequest(1, 1, pool=(0, 99))], "patch pool"),
])
def test_bad_input_is_one_clear_error(kw, size, requests, match):
    model, _ = calibrated_resnet20(bits=(32,))
    x, y = _images(8)
    with pytest.raises(TriqdefError, match=match):
        optimise_patches(model, x, y, size, requests, recipe("lavan", steps=1, step_size=0.1, images_per_patch=2, **kw))
    with pytest.raises(TriqdefError, match="unknown attack"):
        recipe("pgd", steps=1, step_size=0.1, images_per_patch=2)
    with pytest.raises(TriqdefError, match="eot"):
        optimise_patches(model, x, y, 4, [PatchRequest(1, 1, 0, (0, 0), True)],
                         recipe("gap", steps=1, step_size=0.1, images_per_patch=2))
    with pytest.raises(TriqdefError, match="bit-width 4"):
        optimise_patches(model, x, y, 4, [PatchRequest(1, 1)], recipe("gap", steps=1, step_size=0.1,
                                                                       images_per_patch=2), bits=4)
