"""Read the Keras ImageNet ResNet-50 from a TensorFlow.js layers model and convert it.

The Keras network is ResNet "v1": the stride-2 of stages 3-5 sits in the first 1x1 conv,
BatchNorm uses eps=1e-3, convolutions carry biases, and inputs are caffe-style (BGR, 0-255,
mean-subtracted). The converted torchvision network takes RGB in [0, 1] normalised with
:data:`KERAS_MEAN` / :data:`KERAS_STD`, which reproduces the caffe preprocessing exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from brain_tumor.model.keras_layers import keras_resnet50_layers, legacy_keras_name

# caffe preprocessing expressed on RGB images scaled to [0, 1]
KERAS_MEAN: tuple[float, float, float] = (123.68 / 255, 116.779 / 255, 103.939 / 255)
KERAS_STD: tuple[float, float, float] = (1 / 255, 1 / 255, 1 / 255)
KERAS_BN_EPS = 1e-3

_DTYPES = {"float32": np.float32, "int32": np.int32}


class WeightsFormatError(ValueError):
    """The weight files are missing or not a TensorFlow.js layers model."""


def read_tfjs_weights(model_dir: str | Path) -> dict[str, np.ndarray]:
    """Read all weights of a tfjs layers model (``model.json`` + shards) keyed by name."""
    model_dir = Path(model_dir)
    spec_path = model_dir / "model.json"
    if not spec_path.is_file():
        raise WeightsFormatError(f"{spec_path}: not found (expected a tfjs model.json)")
    spec = json.loads(spec_path.read_text())
    if "weightsManifest" not in spec:
        raise WeightsFormatError(f"{spec_path}: no weightsManifest; not a tfjs layers model")
    weights: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        buffer = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            count = int(np.prod(entry["shape"])) if entry["shape"] else 1
            size = count * dtype.itemsize
            if offset + size > len(buffer):
                raise WeightsFormatError(f"{model_dir}: shards too short for {entry['name']}")
            array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
            weights[entry["name"]] = array.reshape(entry["shape"]).copy()
            offset += size
    return weights


def _find(weights: dict[str, np.ndarray], layer: str, var: str) -> np.ndarray:
    for name in (f"{layer}/{var}", f"{legacy_keras_name(layer)}/{var}"):
        if name in weights:
            return weights[name]
        for key in weights:  # tolerate prefixes such as "resnet50/..."
            if key.endswith("/" + name):
                return weights[key]
    raise WeightsFormatError(f"weight {layer}/{var} not found in the Keras weights")


def keras_to_torchvision_state_dict(
    weights: dict[str, np.ndarray], include_top: bool = True
) -> dict[str, torch.Tensor]:
    """Convert Keras ResNet-50 weights into a torchvision ``resnet50`` state dict.

    Conv biases are folded into the following BatchNorm's running mean
    (``BN(conv(x) + b) == BN'(conv(x))`` with ``mean' = mean - b``), which is exact in both
    inference and training mode, so the torchvision bias-free convolutions can be kept.
    The first conv's input channels are reversed so the network takes RGB instead of BGR.
    """
    state: dict[str, torch.Tensor] = {}
    layers = keras_resnet50_layers()
    conv_bias: dict[str, np.ndarray] = {}
    for layer in layers:
        if layer.torch_module is None:
            continue
        if layer.type == "Conv2D":
            kernel = _find(weights, layer.name, "kernel").transpose(3, 2, 0, 1)
            if layer.name == "conv1_conv":
                kernel = kernel[:, ::-1]
            state[f"{layer.torch_module}.weight"] = torch.from_numpy(kernel.copy())
            bn_name = layer.name.removesuffix("_conv") + "_bn"
            conv_bias[bn_name] = _find(weights, layer.name, "bias")
        else:
            mean = _find(weights, layer.name, "moving_mean") - conv_bias[layer.name]
            state[f"{layer.torch_module}.weight"] = torch.from_numpy(_find(weights, layer.name, "gamma"))
            state[f"{layer.torch_module}.bias"] = torch.from_numpy(_find(weights, layer.name, "beta"))
            state[f"{layer.torch_module}.running_mean"] = torch.from_numpy(mean)
            state[f"{layer.torch_module}.running_var"] = torch.from_numpy(
                _find(weights, layer.name, "moving_variance")
            )
            state[f"{layer.torch_module}.num_batches_tracked"] = torch.tensor(0)
    if include_top:
        head = "predictions" if _has(weights, "predictions") else "fc1000"
        state["fc.weight"] = torch.from_numpy(_find(weights, head, "kernel").T.copy())
        state["fc.bias"] = torch.from_numpy(_find(weights, head, "bias"))
    return state


def _has(weights: dict[str, np.ndarray], layer: str) -> bool:
    return any(k == f"{layer}/kernel" or k.endswith(f"/{layer}/kernel") for k in weights)
