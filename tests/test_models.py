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
