"""The layer list of ``tf.keras.applications.ResNet50`` and its torchvision counterparts.

"Freeze the first N layers" in Keras counts every layer (padding, activation, add ...), so the
exact sequence is generated here and mapped onto torchvision module names.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE_BLOCKS: tuple[int, ...] = (3, 4, 6, 3)


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer: its index, name, type and the torch module holding its weights."""

    index: int
    name: str
    type: str
    torch_module: str | None


def _block_layers(stage: int, block: int) -> list[tuple[str, str, str | None]]:
    prefix = f"conv{stage}_block{block}"
    torch_prefix = f"layer{stage - 1}.{block - 1}"
    rows: list[tuple[str, str, str | None]] = []
    for k in (1, 2):
        rows += [
            (f"{prefix}_{k}_conv", "Conv2D", f"{torch_prefix}.conv{k}"),
            (f"{prefix}_{k}_bn", "BatchNormalization", f"{torch_prefix}.bn{k}"),
            (f"{prefix}_{k}_relu", "Activation", None),
        ]
    if block == 1:
        rows += [
            (f"{prefix}_0_conv", "Conv2D", f"{torch_prefix}.downsample.0"),
            (f"{prefix}_3_conv", "Conv2D", f"{torch_prefix}.conv3"),
            (f"{prefix}_0_bn", "BatchNormalization", f"{torch_prefix}.downsample.1"),
            (f"{prefix}_3_bn", "BatchNormalization", f"{torch_prefix}.bn3"),
        ]
    else:
        rows += [
            (f"{prefix}_3_conv", "Conv2D", f"{torch_prefix}.conv3"),
            (f"{prefix}_3_bn", "BatchNormalization", f"{torch_prefix}.bn3"),
        ]
    rows += [(f"{prefix}_add", "Add", None), (f"{prefix}_out", "Activation", None)]
    return rows


def keras_resnet50_layers() -> list[KerasLayer]:
    """Return the 175 layers of tf.keras ResNet50 (without top) in Keras order."""
    rows: list[tuple[str, str, str | None]] = [
        ("input_layer", "InputLayer", None),
        ("conv1_pad", "ZeroPadding2D", None),
        ("conv1_conv", "Conv2D", "conv1"),
        ("conv1_bn", "BatchNormalization", "bn1"),
        ("conv1_relu", "Activation", None),
        ("pool1_pad", "ZeroPadding2D", None),
        ("pool1_pool", "MaxPooling2D", None),
    ]
    for stage, n_blocks in enumerate(STAGE_BLOCKS, start=2):
        for block in range(1, n_blocks + 1):
            rows += _block_layers(stage, block)
    return [KerasLayer(i, name, typ, mod) for i, (name, typ, mod) in enumerate(rows)]


def legacy_keras_name(layer_name: str) -> str:
    """Map a tf.keras 2.x layer name to the Keras 2.2 name used in older weight files.

    ``conv2_block1_1_conv`` -> ``res2a_branch2a``; ``conv2_block1_0_bn`` -> ``bn2a_branch1``.
    """
    if layer_name == "conv1_conv":
        return "conv1"
    if layer_name == "conv1_bn":
        return "bn_conv1"
    parts = layer_name.split("_")
    if len(parts) != 4 or not parts[1].startswith("block"):
        return layer_name
    stage, block, k, kind = parts
    letter = "abcdef"[int(block.removeprefix("block")) - 1]
    branch = "branch1" if k == "0" else "branch2" + "abc"[int(k) - 1]
    head = "res" if kind == "conv" else "bn"
    return f"{head}{stage.removeprefix('conv')}{letter}_{branch}"
