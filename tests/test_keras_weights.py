"""The conversion against an independent reference: conv biases added by hooks, BGR input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from brain_tumor.homes import KERAS_H5_NAME, find_keras_weights
from brain_tumor.model.backbone import load_keras_imagenet, make_resnet50_v1
from brain_tumor.model.keras_layers import keras_resnet50_layers
from brain_tumor.model.keras_weights import (
    KERAS_MEAN,
    KERAS_STD,
    WeightsFormatError,
    keras_to_torchvision_state_dict,
    read_keras_weights,
    read_tfjs_weights,
    write_keras_h5_weights,
)
from tests.conftest import WEIGHTS, needs_weights


def fake_keras_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random Keras-layout weights (HWIO kernels, conv biases, BN stats) for every layer."""
    reference = make_resnet50_v1()
    modules = dict(reference.named_modules())
    weights: dict[str, np.ndarray] = {}
    for layer in keras_resnet50_layers():
        if layer.torch_module is None:
            continue
        module = modules[layer.torch_module]
        if layer.type == "Conv2D":
            o, i, kh, kw = module.weight.shape
            std = (2 / (i * kh * kw)) ** 0.5
            weights[f"{layer.name}/kernel"] = rng.normal(0, std, (kh, kw, i, o)).astype(np.float32)
            weights[f"{layer.name}/bias"] = rng.normal(0, 0.5, o).astype(np.float32)
        else:
            c = module.num_features
            weights[f"{layer.name}/gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            weights[f"{layer.name}/beta"] = rng.normal(0, 0.1, c).astype(np.float32)
            weights[f"{layer.name}/moving_mean"] = rng.normal(0, 0.5, c).astype(np.float32)
            weights[f"{layer.name}/moving_variance"] = rng.uniform(0.5, 2, c).astype(np.float32)
    weights["predictions/kernel"] = rng.normal(0, 0.02, (2048, 10)).astype(np.float32)
    weights["predictions/bias"] = rng.normal(0, 0.1, 10).astype(np.float32)
    return weights


def reference_forward(weights: dict[str, np.ndarray], x_bgr: torch.Tensor) -> torch.Tensor:
    """Keras semantics written independently: explicit conv biases, unfolded BN, BGR input."""
    model = make_resnet50_v1()
    model.fc = torch.nn.Linear(2048, 10)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for layer in keras_resnet50_layers():
            if layer.torch_module is None:
                continue
            m = modules[layer.torch_module]
            if layer.type == "Conv2D":
                m.weight.copy_(torch.from_numpy(weights[f"{layer.name}/kernel"]).permute(3, 2, 0, 1))
                bias = torch.from_numpy(weights[f"{layer.name}/bias"]).view(1, -1, 1, 1)
                m.register_forward_hook(lambda _m, _i, out, b=bias: out + b)
            else:
                m.weight.copy_(torch.from_numpy(weights[f"{layer.name}/gamma"]))
                m.bias.copy_(torch.from_numpy(weights[f"{layer.name}/beta"]))
                m.running_mean.copy_(torch.from_numpy(weights[f"{layer.name}/moving_mean"]))
                m.running_var.copy_(torch.from_numpy(weights[f"{layer.name}/moving_variance"]))
        model.fc.weight.copy_(torch.from_numpy(weights["predictions/kernel"]).T)
        model.fc.bias.copy_(torch.from_numpy(weights["predictions/bias"]))
        return model.eval()(x_bgr)


def write_tfjs(weights: dict[str, np.ndarray], folder: Path, shard_bytes: int = 1 << 22) -> Path:
    """Write weights as a tfjs layers model split into shards."""
    blob = b"".join(v.astype(np.float32).tobytes() for v in weights.values())
    paths = []
    for k, start in enumerate(range(0, len(blob), shard_bytes)):
        paths.append(f"group1-shard{k + 1}.bin")
        (folder / paths[-1]).write_bytes(blob[start:start + shard_bytes])
    manifest = [{"paths": paths, "weights": [{"name": n, "shape": list(v.shape), "dtype": "float32"}
                                             for n, v in weights.items()]}]
    (folder / "model.json").write_text(json.dumps({"format": "layers-model", "weightsManifest": manifest}))
    return folder


def test_conversion_matches_keras_semantics(tmp_path: Path) -> None:
    weights = fake_keras_weights(np.random.default_rng(0))
    read_back = read_tfjs_weights(write_tfjs(weights, tmp_path))
    assert all(np.array_equal(read_back[k], v) for k, v in weights.items())
    model = make_resnet50_v1()
    model.fc = torch.nn.Linear(2048, 10)
    model.load_state_dict(keras_to_torchvision_state_dict(read_back))
    x_rgb = torch.rand(2, 3, 64, 64)
    ours = model.eval()(x_rgb)
    expected = reference_forward(weights, x_rgb.flip(1))
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-3)


def test_stride_two_in_first_1x1_conv() -> None:
    model = make_resnet50_v1()
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_weight_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsFormatError, match="model.json"):
        read_tfjs_weights(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(WeightsFormatError, match="weightsManifest"):
        read_tfjs_weights(tmp_path)


@needs_weights
@pytest.mark.parametrize("name, expected", [("chelsea", {281, 282, 285}), ("coffee", {967})])
def test_real_keras_weights_classify_imagenet_images(name: str, expected: set[int]) -> None:
    from PIL import Image
    from skimage import data

    model = load_keras_imagenet(WEIGHTS).eval()
    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(KERAS_MEAN).view(3, 1, 1)) / torch.tensor(KERAS_STD).view(3, 1, 1)
    with torch.no_grad():
        top1 = int(model(x[None]).argmax())
    assert top1 in expected  # 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso


def test_h5_in_the_keras_layout_round_trips(tmp_path: Path) -> None:
    weights = fake_keras_weights(np.random.default_rng(1))
    order = [layer.name for layer in keras_resnet50_layers()] + ["avg_pool", "predictions"]
    path = write_keras_h5_weights(weights, tmp_path / "w.h5", order)
    with h5py.File(path, "r") as f:  # the layout of keras/src/legacy/saving/legacy_h5_format.py
        assert [n.decode() for n in f.attrs["layer_names"]][:3] == ["input_layer", "conv1_pad", "conv1_conv"]
        assert [n.decode() for n in f["conv1_conv"].attrs["weight_names"]] == ["conv1_conv/kernel:0",
                                                                               "conv1_conv/bias:0"]
        assert f["conv1_conv/conv1_conv/kernel:0"].shape == (7, 7, 3, 64)
        assert len(f["conv1_pad"].attrs["weight_names"]) == 0
    back = read_keras_weights(path)
    assert back.keys() == weights.keys() and all(np.array_equal(back[k], v) for k, v in weights.items())


def test_bad_h5(tmp_path: Path) -> None:
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsFormatError, match="not an HDF5 file"):
        read_keras_weights(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsFormatError, match="no layer_names"):
        read_keras_weights(tmp_path / "empty.h5")
    with pytest.raises(WeightsFormatError, match="not found"):
        read_keras_weights(tmp_path / "absent.h5")


@needs_weights
def test_shared_tfjs_and_its_h5_give_the_same_network(tmp_path: Path) -> None:
    tfjs = read_tfjs_weights(WEIGHTS)
    layers = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in tfjs))
    h5 = write_keras_h5_weights(tfjs, tmp_path / KERAS_H5_NAME, layers)
    from_h5, from_tfjs = (keras_to_torchvision_state_dict(read_keras_weights(p)) for p in (h5, WEIGHTS))
    assert from_h5.keys() == from_tfjs.keys() and len(from_h5) == 53 + 53 * 5 + 2  # convs, BNs, fc
    assert all(torch.equal(from_h5[k], from_tfjs[k]) for k in from_tfjs)
    assert find_keras_weights(tmp_path) == h5  # a weights home holding the .h5 is found
    network = load_keras_imagenet(tmp_path)
    assert torch.equal(network.state_dict()["conv1.weight"], from_tfjs["conv1.weight"])
