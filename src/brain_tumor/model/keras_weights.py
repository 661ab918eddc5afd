"""Read the Keras ImageNet ResNet-50 (a Keras ``.h5`` weights file or a TensorFlow.js layers model)
and convert it.

The Keras network is ResNet "v1": the stride-2 of stages 3-5 sits in the first 1x1 conv,
BatchNorm uses eps=1e-3, convolutions carry biases, and inputs are caffe-style (BGR, 0-255,
mean-subtracted). The converted torchvision network takes RGB in [0, 1] normalised with
:data:`KERAS_MEAN` / :data:`KERAS_STD`, which reproduces the caffe preprocessing exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

from brain_tumor.model.keras_layers import keras_resnet50_layers, legacy_keras_name

# caffe preprocessing expressed on RGB images scaled to [0, 1]
KERAS_MEAN: tuple[float, float, float] = (123.68 / 255, 116.779 / 255, 103.939 / 255)
KERAS_STD: tuple[float, float, float] = (1 / 255, 1 / 255, 1 / 255)
KERAS_BN_EPS = 1e-3

_DTYPES = {"float32": np.float32, "int32": np.int32}


class WeightsFormatError(ValueError):
    """The weight files are missing or not a Keras ``.h5`` / TensorFlow.js layers model."""


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


def _h5_names(node: h5py.Group | h5py.AttributeManager, name: str) -> list[str]:
    """A list-of-strings attribute, possibly split into ``name0``, ``name1``... as Keras writes
    long ones (``load_attributes_from_hdf5_group`` in keras/src/legacy/saving/legacy_h5_format.py)."""
    attrs = node.attrs if isinstance(node, h5py.Group) else node
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in attrs:
            chunks.append(attrs[f"{name}{k}"])
            k += 1
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in np.atleast_1d(chunk)]


def read_keras_h5_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Read a Keras legacy ``.h5`` weights file (what ``tf.keras.applications.ResNet50`` downloads)
    keyed ``<layer>/<variable>`` like :func:`read_tfjs_weights`.

    Layout (keras/src/legacy/saving/legacy_h5_format.py, ``save_weights_to_hdf5_group``): the root
    (or the ``model_weights`` group of a whole-model file) lists ``layer_names``; each layer's group
    lists ``weight_names`` (e.g. ``conv1_conv/kernel:0``) and holds them as datasets at those paths.
    Only numeric datasets are read; nothing is unpickled.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsFormatError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0]})") from None
    with f:
        root: h5py.Group = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
        layers = _h5_names(root, "layer_names")
        if not layers:
            raise WeightsFormatError(f"{path}: no layer_names; not a Keras weights file")
        weights: dict[str, np.ndarray] = {}
        for layer in layers:
            group = root.get(layer)
            if not isinstance(group, h5py.Group):
                raise WeightsFormatError(f"{path}: layer {layer!r} listed but absent")
            for weight_name in _h5_names(group, "weight_names"):
                dataset = group.get(weight_name)
                if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
                    raise WeightsFormatError(f"{path}: weight {layer}/{weight_name} missing or not numeric")
                variable = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
                weights[f"{layer}/{variable}"] = np.asarray(dataset[()])
    return weights


def write_keras_h5_weights(weights: dict[str, np.ndarray], path: str | Path,
                           layer_order: Iterable[str] | None = None) -> Path:
    """Write ``<layer>/<variable>`` weights in the Keras legacy ``.h5`` layout (the inverse of
    :func:`read_keras_h5_weights`; e.g. to turn the TensorFlow.js export into the official format)."""
    by_layer: dict[str, list[str]] = {}
    for key in weights:
        layer, variable = key.rsplit("/", 1)
        by_layer.setdefault(layer, []).append(variable)
    order = list(layer_order) if layer_order is not None else list(by_layer)
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n in order])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in sorted(order):
            group = f.create_group(layer)
            names = [f"{layer}/{v}:0" for v in by_layer.get(layer, [])]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in names], dtype="S")
            for name, variable in zip(names, by_layer.get(layer, []), strict=True):
                group.create_dataset(name, data=weights[f"{layer}/{variable}"])
    return path


def read_keras_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Keras weights from a ``.h5`` file or a TensorFlow.js folder (one with ``model.json``)."""
    path = Path(path)
    if path.is_dir():
        return read_tfjs_weights(path)
    if path.is_file():
        return read_keras_h5_weights(path)
    raise WeightsFormatError(f"{path}: not found (expected a Keras .h5 file or a tfjs folder with model.json)")


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
