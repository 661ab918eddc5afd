"""Networks: the ResNet-50 classifier, Keras weight conversion and Keras-style freezing."""

from brain_tumor.model.backbone import (
    Preprocessing,
    build_classifier,
    classify_features,
    features_fp32_stem,
    forward_fp32_stem,
    preprocessing_for,
)
from brain_tumor.model.freezing import FreezeReport, freeze_first_keras_layers, set_frozen_batchnorm_eval

__all__ = [
    "FreezeReport",
    "Preprocessing",
    "build_classifier",
    "classify_features",
    "features_fp32_stem",
    "forward_fp32_stem",
    "freeze_first_keras_layers",
    "preprocessing_for",
    "set_frozen_batchnorm_eval",
]
