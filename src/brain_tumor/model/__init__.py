"""Networks: the ResNet-50 classifier, Keras weight conversion and Keras-style freezing."""

from brain_tumor.model.backbone import (
    TUMOUR_MAP,
    Preprocessing,
    add_tumour_map,
    build_classifier,
    classify_features,
    features_fp32_stem,
    forward_fp32_stem,
    has_tumour_map,
    preprocessing_for,
    stage_features_fp32_stem,
    tumour_evidence,
    tumour_map_logits,
)
from brain_tumor.model.freezing import FreezeReport, freeze_first_keras_layers, set_frozen_batchnorm_eval

__all__ = [
    "TUMOUR_MAP",
    "FreezeReport",
    "Preprocessing",
    "add_tumour_map",
    "build_classifier",
    "classify_features",
    "features_fp32_stem",
    "forward_fp32_stem",
    "freeze_first_keras_layers",
    "has_tumour_map",
    "preprocessing_for",
    "set_frozen_batchnorm_eval",
    "stage_features_fp32_stem",
    "tumour_evidence",
    "tumour_map_logits",
]
