"""Freeze the first N layers exactly as ``tf.keras`` counts them, and keep frozen BN in inference."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from brain_tumor.model.keras_layers import keras_resnet50_layers


@dataclass(frozen=True)
class FreezeReport:
    """What a freeze did: Keras layers frozen, torch modules frozen and parameter counts."""

    n_layers: int
    frozen_modules: tuple[str, ...]
    frozen_parameters: int
    trainable_parameters: int


def keras_frozen_modules(n_layers: int) -> list[str]:
    """Torch module names holding the weights of the first ``n_layers`` Keras layers."""
    layers = keras_resnet50_layers()
    if not 0 <= n_layers <= len(layers):
        raise ValueError(f"n_layers must be in 0..{len(layers)}, got {n_layers}")
    return [layer.torch_module for layer in layers[:n_layers] if layer.torch_module is not None]


def freeze_first_keras_layers(model: nn.Module, n_layers: int) -> FreezeReport:
    """Set ``requires_grad=False`` on the parameters of the first ``n_layers`` Keras layers."""
    names = keras_frozen_modules(n_layers)
    modules = dict(model.named_modules())
    for name in names:
        for param in modules[name].parameters():
            param.requires_grad_(False)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return FreezeReport(n_layers, tuple(names), frozen, trainable)


def set_frozen_batchnorm_eval(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in inference mode.

    tf.keras runs a BatchNorm layer with ``trainable=False`` in inference mode (running
    statistics, no updates); call this after every ``model.train()``.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
