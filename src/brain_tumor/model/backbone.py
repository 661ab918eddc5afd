"""Build the ResNet-50 classifier: torchvision's network carrying Keras, torchvision or no weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet, ResNet50_Weights, resnet50

from brain_tumor.homes import find_keras_weights
from brain_tumor.model.keras_weights import (
    KERAS_BN_EPS,
    KERAS_MEAN,
    KERAS_STD,
    keras_to_torchvision_state_dict,
    read_keras_weights,
)

TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = ("keras", "torchvision", "none")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels must be normalised for a set of weights: RGB in [0, 1], then (x - mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int = 224
    pipeline: str = "paper"  # slice preprocessing before resizing: paper | robust


def preprocessing_for(weights: str, image_size: int = 224, pipeline: str = "paper") -> Preprocessing:
    """Return the normalisation that the named weights were trained with."""
    if weights == "keras":
        return Preprocessing(KERAS_MEAN, KERAS_STD, image_size, pipeline)
    return Preprocessing(TORCHVISION_MEAN, TORCHVISION_STD, image_size, pipeline)


def make_resnet50_v1(bn_eps: float = KERAS_BN_EPS, bn_momentum: float = 0.1) -> ResNet:
    """torchvision ResNet-50 rearranged as Keras' v1: stride 2 in the first 1x1 conv of a stage."""
    model = resnet50(weights=None)
    for stage in (model.layer2, model.layer3, model.layer4):
        block = stage[0]
        block.conv1.stride = (2, 2)
        block.conv2.stride = (1, 1)
    set_batchnorm(model, eps=bn_eps, momentum=bn_momentum)
    return model


def set_batchnorm(model: nn.Module, eps: float, momentum: float) -> None:
    """Set eps and momentum of every BatchNorm layer."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps
            module.momentum = momentum


def load_keras_imagenet(weights_path: str | Path, bn_momentum: float = 0.1) -> ResNet:
    """The Keras ImageNet ResNet-50 (1000 classes) as a torchvision module, from a Keras ``.h5``
    file, a TensorFlow.js folder, or a weights home holding the ``.h5`` (see brain_tumor.homes)."""
    model = make_resnet50_v1(KERAS_BN_EPS, bn_momentum)
    found = find_keras_weights(weights_path)
    state = keras_to_torchvision_state_dict(read_keras_weights(found or weights_path), include_top=True)
    model.load_state_dict(state, strict=True)
    return model


def load_torchvision_imagenet(weights_file: str | Path | None = None) -> ResNet:
    """torchvision's ImageNet ResNet-50 (v1.5), from a local file or the user's torch cache."""
    if weights_file is None:
        return resnet50(weights=ResNet50_Weights.IMAGENET1K_V2)
    model = resnet50(weights=None)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    return model


def build_classifier(
    weights: str,
    num_classes: int,
    weights_path: str | Path | None = None,
    bn_momentum: float = 0.1,
) -> ResNet:
    """ResNet-50 with a new ``num_classes`` head.

    Args:
        weights: ``keras`` (the paper's weights, from ``weights_path``: a Keras .h5 file, a tfjs model
            folder, or a folder holding the .h5),
            ``torchvision`` (from ``weights_path`` or torch's cache/download) or ``none``.
        num_classes: size of the new softmax head.
        weights_path: where the pretrained weights are.
        bn_momentum: torch-style BatchNorm momentum for fine-tuning.
    """
    if weights == "keras":
        if weights_path is None:
            raise ValueError("keras weights need model.weights_path (a Keras .h5 file or a tfjs model folder)")
        model = load_keras_imagenet(weights_path, bn_momentum)
    elif weights == "torchvision":
        # a folder is the Keras weights home or TF.js export (the default weights_path): torch's cache then
        model = load_torchvision_imagenet(None if weights_path and Path(weights_path).is_dir() else weights_path)
        set_batchnorm(model, eps=1e-5, momentum=bn_momentum)
    elif weights == "none":
        model = make_resnet50_v1(KERAS_BN_EPS, bn_momentum)
    else:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def features_fp32_stem(network: ResNet, x: torch.Tensor) -> torch.Tensor:
    """The last stage's feature map ``[B, 2048, h, w]`` of a ResNet whose stem (conv1, bn1, relu,
    maxpool) always runs in fp32, whatever autocast is active; the stages follow the caller's
    autocast.

    The Keras weights expect caffe-scale inputs (0-255, mean-subtracted): conv1's outputs are
    large, and rounding them to bf16 loses much of what bn1 then keeps. With the stem in fp32,
    bf16 autocast stays within a few slices of fp32 (measured in ``bench/speed.py``).
    """
    return stage_features_fp32_stem(network, x)[1]


def stage_features_fp32_stem(network: ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The third stage's map ``[B, 1024, H/16, W/16]`` and the last stage's ``[B, 2048, H/32,
    W/32]``, the stem in fp32 as in :func:`features_fp32_stem`."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = network.maxpool(network.relu(network.bn1(network.conv1(x.float()))))
    third: torch.Tensor = network.layer3(network.layer2(network.layer1(x)))
    last: torch.Tensor = network.layer4(third)
    return third, last


TUMOUR_MAP = "tumour_map"  # the name of the tumour-map head in a network (and its checkpoint's state dict)
TUMOUR_MAP_PRIOR = 0.01  # the head's initial probability that a cell shows tumour (its bias)


def add_tumour_map(network: ResNet) -> ResNet:
    """Give ``network`` a tumour map: a 1x1 convolution on the third stage's map (stride 16, 14 x 14
    cells at 224 px), one logit per cell for "tumour tissue here". A cell of the third stage sees
    a neighbourhood, not the whole slice as the last stage's do, and each cell is trained on its own
    target (:func:`brain_tumor.training.losses.tumour_map_loss`), so the slice's context, shared
    by the cells inside and outside the tumour, cannot tell them apart. The bias starts at the
    logit of :data:`TUMOUR_MAP_PRIOR` (most cells show no tumour), as detectors' heads do."""
    channels = int(network.fc.in_features) // 2  # the third stage's width: half the last stage's
    head = nn.Conv2d(channels, 1, kernel_size=1)
    nn.init.normal_(head.weight, std=0.01)
    assert head.bias is not None
    nn.init.constant_(head.bias, math.log(TUMOUR_MAP_PRIOR / (1 - TUMOUR_MAP_PRIOR)))
    network.add_module(TUMOUR_MAP, head)
    return network


def has_tumour_map(network: nn.Module) -> bool:
    """Whether ``network`` carries the head of :func:`add_tumour_map`."""
    return isinstance(getattr(network, TUMOUR_MAP, None), nn.Conv2d)


def tumour_map_logits(network: nn.Module, third: torch.Tensor) -> torch.Tensor:
    """The tumour map's logits ``[B, 1, h, w]`` from the third stage's map, in fp32 whatever
    autocast is active."""
    head = getattr(network, TUMOUR_MAP)
    with torch.autocast(device_type=third.device.type, enabled=False):
        logits: torch.Tensor = head(third.float())
    return logits


def tumour_evidence(map_logits: torch.Tensor) -> torch.Tensor:
    """Per slice, the strongest cell's probability of tumour tissue ``[B]``: how much of a
    tumour the map finds anywhere in the slice."""
    return torch.sigmoid(map_logits.flatten(1).amax(1))


def classify_features(network: ResNet, features: torch.Tensor) -> torch.Tensor:
    """The head of a ResNet: global average pooling, then the linear classifier."""
    logits: torch.Tensor = network.fc(torch.flatten(network.avgpool(features), 1))
    return logits


def forward_fp32_stem(network: ResNet, x: torch.Tensor) -> torch.Tensor:
    """A ResNet forward (logits) with the stem in fp32: :func:`features_fp32_stem`, then the head."""
    return classify_features(network, features_fp32_stem(network, x))
