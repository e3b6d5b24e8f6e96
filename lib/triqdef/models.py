"""Model zoo: CIFAR ResNet-20/56, VGG-16/19-BN, a CIFAR AlexNet, and ImageNet models from torchvision.

Every model takes images in [0, 1] and normalises them in its first layer
(:class:`Normalize`), so attacks and patches live in pixel space. Every
activation is an ``nn.ReLU`` *module used once* (including the ReLU after a
residual sum), so :func:`triqdef.quant.quantize_model` can give each its own
per-bit-width observer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef.errors import TriqdefError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer (inputs in [0, 1])."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block (He et al. 2016, sec. 4.2) with the parameter-free option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()  # after the residual sum
        self.stride, self.pad = stride, planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: 16/32/64 channels, 3 stages of n blocks."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise TriqdefError(f"CIFAR ResNet depth {depth}: expected 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        planes, layers = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(planes, width, stride)] + [BasicBlock(width, width) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            planes = width
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


VGG_CONFIGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    """VGG-16/19 with BatchNorm for 32×32 inputs (conv-BN-ReLU stacks, one 512→classes linear)."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        layers: list[nn.Module] = []
        c = 3
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))


class CifarAlexNet(nn.Module):
    """AlexNet for 32×32 inputs (5 conv + 3 linear layers as Krizhevsky 2012, with BatchNorm, smaller kernels)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        spec = [(3, 64, 5, True), (64, 192, 5, True), (192, 384, 3, False), (384, 256, 3, False), (256, 256, 3, True)]
        layers: list[nn.Module] = []
        for cin, cout, k, pool in spec:
            layers += [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(3, 2))
        self.features = nn.Sequential(*layers)  # 32 -> 15 -> 7 -> 3
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 3 * 3, 1024), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))


class ImageNetModel(nn.Module):
    """A torchvision ImageNet classifier (random init, no hub weights) behind a Normalize layer."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _torchvision(name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return ImageNetModel(torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs))

    return build


CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet20": lambda k: CifarResNet(20, k),
    "resnet56": lambda k: CifarResNet(56, k),
    "vgg16_bn": lambda k: CifarVGG(16, k),
    "vgg19_bn": lambda k: CifarVGG(19, k),
    "alexnet": CifarAlexNet,
}
IMAGENET_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
    "densenet121": _torchvision("densenet121"),
    "inception_v3": _torchvision("inception_v3", aux_logits=False, init_weights=True),
}
MODEL_NAMES = tuple(CIFAR_MODELS) + tuple(IMAGENET_MODELS)

# Every model's 4-D weights are kept channels-last (NHWC): oneDNN's convolutions then run NHWC end to end.
# On the 2-core CPU (ResNet-20, batch 128) a float training step took 212 ms against 266 ms contiguous (1.25x),
# a 5-bit-width joint QAT step 1.41-1.50 s against 1.76-2.01 s, inference 1.1x (README "Speed").
# Values agree with the contiguous layout to float rounding; copies (deepcopy, load_state_dict) keep the layout.
MEMORY_FORMAT = torch.channels_last


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
    """Build a model by name (see ``MODEL_NAMES``); CIFAR models default to 10 classes, ImageNet to 1000.

    The weights are laid out as :data:`MEMORY_FORMAT` (channels-last).
    """
    if name in CIFAR_MODELS:
        model = CIFAR_MODELS[name](num_classes or 10)
    elif name in IMAGENET_MODELS:
        model = IMAGENET_MODELS[name](num_classes or 1000)
    else:
        raise TriqdefError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    return model.to(memory_format=MEMORY_FORMAT)


def input_size(name: str) -> int:
    """Side of the square input a model expects (32 for CIFAR, 299 for Inception-v3, else 224)."""
    if name in CIFAR_MODELS:
        return 32
    return 299 if name == "inception_v3" else 224
