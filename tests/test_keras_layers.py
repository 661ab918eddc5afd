import csv

import pytest

from brain_tumor.model.keras_layers import keras_resnet50_layers, legacy_keras_name
from tests.conftest import LAYERS_TSV


def test_175_layers_with_weights_mapped() -> None:
    layers = keras_resnet50_layers()
    assert len(layers) == 175
    weighted = [layer for layer in layers if layer.type in ("Conv2D", "BatchNormalization")]
    assert len(weighted) == 106 and all(layer.torch_module for layer in weighted)
    assert layers[14].name == "conv2_block1_3_conv" and layers[14].torch_module == "layer1.0.conv3"


@pytest.mark.skipif(not LAYERS_TSV.is_file(), reason="shared reference absent")
def test_matches_tf_keras_reference() -> None:
    with LAYERS_TSV.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["name"], r["type"]) for r in rows] == [(layer.name, layer.type) for layer in keras_resnet50_layers()]


@pytest.mark.parametrize("name, legacy", [
    ("conv1_conv", "conv1"), ("conv1_bn", "bn_conv1"), ("conv2_block1_1_conv", "res2a_branch2a"),
    ("conv2_block1_0_bn", "bn2a_branch1"), ("conv4_block6_3_conv", "res4f_branch2c"), ("fc1000", "fc1000"),
])
def test_legacy_names(name: str, legacy: str) -> None:
    assert legacy_keras_name(name) == legacy
