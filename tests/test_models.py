import pytest
import torch

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import CIFAR_MODELS, IMAGENET_MODELS, MODEL_NAMES, Normalize, build_model


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_cifar_model_output_shape(name):
    model = build_model(name).eval()
    assert isinstance(model.normalize, Normalize)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(IMAGENET_MODELS))
def test_imagenet_model_output_shape(name):
    model = build_model(name, num_classes=7).eval()
    side = 75 if name == "inception_v3" else 64  # smallest inputs the nets accept keep the test fast
    with torch.no_grad():
        assert model(torch.rand(1, 3, side, side)).shape == (1, 7)


def test_resnet_sizes_and_relu_modules_not_reused():
    assert sum(p.numel() for p in build_model("resnet20").parameters()) == pytest.approx(0.27e6, rel=0.02)
    assert sum(p.numel() for p in build_model("resnet56").parameters()) == pytest.approx(0.85e6, rel=0.02)
    model = quant.quantize_model(build_model("resnet20"), [32, 4])
    calls = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in model.named_modules() if isinstance(m, quant.QuantReLU)]
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(calls) == 19 and set(calls.values()) == {1}  # stem + 2 per block, each its own observer


def test_normalization_is_the_first_layer():
    model = build_model("resnet20")
    x = torch.rand(1, 3, 32, 32)
    expected = (x - model.normalize.mean) / model.normalize.std
    torch.testing.assert_close(model.normalize(x), expected)


def test_unknown_model_rejected():
    with pytest.raises(TriqdefError, match="unknown model 'resnet21'.*resnet20"):
        build_model("resnet21")
    assert "resnet20" in MODEL_NAMES and "inception_v3" in MODEL_NAMES


def test_models_are_channels_last_and_agree_with_the_contiguous_layout():
    """build_model lays 4-D weights out channels-last (speed, README "Speed"); the outputs, the input gradient
    and the layout after quantize_model / load_state_dict match a contiguous copy to float rounding."""
    torch.manual_seed(0)
    cl = quant.quantize_model(build_model("resnet20"), [32, 4]).eval()
    conv_weights = [p for p in cl.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    x = torch.rand(4, 3, 32, 32)
    quant.calibrate(cl, [x], 4)
    plain = quant.quantize_model(build_model("resnet20"), [32, 4]).to(memory_format=torch.contiguous_format).eval()
    plain.load_state_dict(cl.state_dict())  # the same observer ranges
    assert all(p.is_contiguous() for p in plain.parameters())
    for bits in (32, 4):
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        with quant.use_bitwidth(cl, bits), quant.use_bitwidth(plain, bits):
            out_cl, out_plain = cl(xs[0]), plain(xs[1])
            out_cl.sum().backward()
            out_plain.sum().backward()
        assert torch.allclose(out_cl, out_plain, atol=1e-4)
        assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-4)
    reloaded = build_model("resnet20")
    reloaded.load_state_dict(build_model("resnet20").state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in reloaded.parameters() if p.dim() == 4)
