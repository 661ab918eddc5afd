"""ONNX export of a checkpoint (normalisation included), fp32 and static int8."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import ResNet

from brain_tumor.atomic import atomic_path
from brain_tumor.inference import Predictor
from brain_tumor.model.backbone import TUMOUR_MAP, has_tumour_map, tumour_evidence
from brain_tumor.onnx_runtime import FINGERPRINT_KEY, OnnxPredictor, file_sha256
from brain_tumor.transforms import Normalize

log = logging.getLogger(__name__)


class ExportWrapper(nn.Module):
    """float ``[B, 1, S, S]`` in [0, 1] -> ``(logits, penultimate features)``, with the weights'
    normalisation inside; the features let the OOD flag and the gate run on the exported model
    too. A network with a tumour map adds a third output, each slice's tumour evidence (its
    strongest cell, :func:`brain_tumor.model.tumour_evidence`), for the map's "no tumour" answer."""

    def __init__(self, network: ResNet, normalize: Normalize) -> None:
        super().__init__()
        self.network, self.normalize = network, normalize
        self.classifier = network.fc
        self.with_evidence = has_tumour_map(network)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        net = self.network
        y = net.maxpool(net.relu(net.bn1(net.conv1(self.normalize(x)))))
        third = net.layer3(net.layer2(net.layer1(y)))
        features = torch.flatten(net.avgpool(net.layer4(third)), 1)
        if not self.with_evidence:
            return self.classifier(features), features
        return self.classifier(features), features, tumour_evidence(getattr(net, TUMOUR_MAP)(third))

    @property
    def output_names(self) -> list[str]:
        return ["logits", "features", *(["tumour_evidence"] if self.with_evidence else [])]


def default_onnx_path(checkpoint: str | Path) -> Path:
    """Where ``export`` writes by default and where ``predict``/``serve`` look: beside the checkpoint."""
    return Path(checkpoint).with_name("model.onnx")


def int8_path(fp32_onnx: str | Path) -> Path:
    return Path(fp32_onnx).with_suffix(".int8.onnx")


def stamp_fingerprint(onnx_path: str | Path, checkpoint: str | Path) -> None:
    """Record the checkpoint's SHA-256 in the ONNX metadata, so a stale export is never used."""
    import onnx

    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = FINGERPRINT_KEY, file_sha256(checkpoint)
    with atomic_path(onnx_path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def export_onnx(checkpoint: str | Path, output: str | Path, opset: int = 17) -> Path:
    """Write an ONNX model with a dynamic batch axis; input ``image`` float [B, 1, S, S] in [0, 1];
    outputs ``logits``, ``features`` and, for a model with a tumour map, ``tumour_evidence`` [B];
    the checkpoint's fingerprint in its metadata."""
    predictor = Predictor.from_checkpoint(checkpoint)
    wrapper = ExportWrapper(predictor.network, predictor.normalize).eval()
    size = predictor.preprocessing.image_size
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output, suffix=".onnx") as tmp:
        names = wrapper.output_names
        torch.onnx.export(wrapper, (torch.rand(1, 1, size, size),), str(tmp), input_names=["image"],
                          output_names=names, dynamic_axes={name: {0: "batch"} for name in ["image", *names]},
                          opset_version=opset, dynamo=False)
        stamp_fingerprint(tmp, checkpoint)
    return output


def quantize_int8(fp32_onnx: str | Path, output: str | Path, calibration_uint8: np.ndarray,
                  keep_stem_fp32: bool = True) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on ``calibration_uint8``.

    Calibration images set activation ranges only (no labels): take them from training data.
    ``keep_stem_fp32`` leaves the first convolution unquantized: its caffe-scale inputs and
    outputs are where low precision costs accuracy (as with bf16). A tumour map's head stays fp32
    too: its threshold sits in the far tail of its output. Only convolutions and the
    classifier run in int8; each residual sum and its ReLU stay fp32 and are rounded after the
    ReLU, so the 8 bits are not spent on negative sums the ReLU then discards.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_uint8) == 0:
        raise ValueError("int8 quantization needs calibration images")

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information
        """The calibration images, 16 at a time, as the exported model's float input."""

        def __init__(self) -> None:
            self.batches = iter([calibration_uint8[i:i + 16] for i in range(0, len(calibration_uint8), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {"image": chunk.astype(np.float32) / 255.0}

    reader = Reader()
    fingerprint = OnnxPredictor(fp32_onnx).metadata.get(FINGERPRINT_KEY)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))
        graph = onnx.load(str(prepared)).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        heads = [name for name in convs if f"/{TUMOUR_MAP}/" in name]
        if any(o.name == "tumour_evidence" for o in graph.output) and not heads:
            raise ValueError(f"{fp32_onnx}: the tumour map's head is not found by name: it would be quantized")
        quantize_static(str(prepared), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Gemm"],
                        nodes_to_exclude=(convs[:1] if keep_stem_fp32 else []) + heads)
    if fingerprint:  # the quantizer drops metadata: carry the checkpoint's fingerprint over
        model = onnx.load(str(output))
        entry = model.metadata_props.add()
        entry.key, entry.value = FINGERPRINT_KEY, fingerprint
        onnx.save(model, str(output))
    return output


def default_model_card(meta: dict[str, Any], shortcut: dict[str, Any] | None = None,
                       calibration: dict[str, Any] | None = None, gate: bool = False) -> str:
    """A model card from what the checkpoint says about itself and, if given, its entry of the
    shortcut benchmark and the ``calibration.json`` that goes with it (``trust`` writes a fuller card)."""
    from brain_tumor.evaluation.model_card import shortcut_section

    recipe = meta.get("config", {})
    data, train = recipe.get("data", {}), recipe.get("train", {})
    metrics = "\n".join(f"- {k}: {v}" for k, v in (meta.get("metrics") or {}).items()) or "- none recorded"
    return f"""# brain-tumor model: {meta['architecture']}, classes {', '.join(meta['class_names'])}

**Intended use**: research on classifying T1-weighted contrast-enhanced MRI slices that show a
glioma, a meningioma or a pituitary tumour. **Not** a medical device; not for diagnosis or
treatment decisions. {_gate_line(gate)} With a
`calibration.json` (`brain-tumor calibrate`) it gives prediction sets with a stated coverage,
valid for slices like the Figshare T1-CE ones. Do not use it on other sequences, on CT, on
whole volumes or on children without measuring first.

Recipe: {data.get('image_size')} px, preprocessing {data.get('preprocessing')}, augmentation
{data.get('augmentation')}, freeze {recipe.get('model', {}).get('freeze_layers')} Keras layers,
up to {train.get('max_epochs')} epochs at {train.get('precision')}, counterfactual share
{train.get('counterfactual', 0.0)}, context mix {train.get('context_mix', 0.0)}, context penalty
{train.get('context_penalty', 0.0)}, tumour map {train.get('tumour_map', 0.0)}; best epoch {meta.get('epoch')}.
{evidence_section(meta.get('tumour_evidence'))}

**Context shortcut**: {shortcut_section(shortcut)}

Metrics stored with the weights:
{metrics}

Calibration: {_calibration_line(calibration or meta.get('calibration'))}.
"""


def _gate_line(gate: bool) -> str:
    measured = ("the gate was measured on no-tumour slices of other collections, and a contrast it was not "
                "trained on (a T2 or FLAIR tumour slice) can still be called \"no tumour\".")
    if gate:
        return ("It carries its \"no tumour\" gate (`gate.json`, fitted for these weights by "
                f"`brain-tumor no-tumour-gate`), so it can answer `no_tumour`; {measured}")
    return ("Alone it has no \"no tumour\" answer: every slice is called one of the three tumours. With a "
            "`gate.json` fitted for this model (`brain-tumor no-tumour-gate`) it answers `no_tumour`; " + measured)


def _calibration_line(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return "none (run brain-tumor calibrate on a CV of this recipe, or trust on the checkpoint, then export again)"
    fitted = calibration.get("fitted_on") or {}
    where = f", fitted on {fitted.get('n_slices')} slices ({fitted.get('protocol')})" if fitted else ""
    return (f"temperature {calibration.get('temperature'):.3f}, referral threshold "
            f"{calibration.get('refer_threshold'):.3f} for {calibration.get('target_risk', 0.02):.0%} error "
            f"among answered slices{where}")


def export_package(checkpoint: str | Path, out_dir: str | Path, model_card: str | Path | None = None) -> Path:
    """Write a model package (see :mod:`brain_tumor.package`) from a checkpoint: safetensors
    weights, config.json, the OOD bank, the model card, the ONNX exports made from it, the
    calibration.json and gate.json beside it, and SHA256SUMS. Written into ``<out_dir>.partial``
    and renamed, so a package is whole or absent."""
    import json
    import shutil

    from safetensors.torch import save_file

    from brain_tumor.calibration_file import load_calibration
    from brain_tumor.config import portable
    from brain_tumor.environment import describe_environment
    from brain_tumor.model_loading import find_beside, find_exports, shortcut_for
    from brain_tumor.package import PACKAGE_FORMAT, write_sums
    from brain_tumor.training.checkpoint import read_checkpoint

    payload = read_checkpoint(checkpoint)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in payload["state_dict"].items()}, str(tmp / "model.safetensors"))
    ood = payload.get("ood")
    if ood is not None:
        save_file({"bank": ood["bank"].contiguous()}, str(tmp / "ood_bank.safetensors"))
    env = describe_environment()
    config = {"format": PACKAGE_FORMAT, "architecture": payload["architecture"],
              "class_names": payload["class_names"], "preprocessing": payload["preprocessing"],
              "bn_eps": payload["bn_eps"], "epoch": payload.get("epoch"), "metrics": payload.get("metrics"),
              "calibration": payload.get("calibration"),
              "tumour_evidence": payload.get("tumour_evidence"),  # the tumour map's threshold, if the model has one
              "ood": {k: v for k, v in ood.items() if k != "bank"} if ood is not None else None,
              "recipe": portable(payload.get("config", {})),  # names no machine's folders
              "package": {"source_checkpoint_sha256": file_sha256(checkpoint),
                          "code": {"git_commit": env.get("git_commit"),
                                   "packages": {k: env["packages"].get(k) for k in ("torch", "torchvision")}},
                          "data": {"root": Path(str(payload.get("config", {}).get("data", {}).get("root", ""))).name}}}
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=float))
    beside = find_beside(checkpoint, "calibration.json")
    card = Path(model_card).read_text() if model_card else default_model_card(
        payload, shortcut_for(checkpoint), load_calibration(beside) if beside else None,
        gate=find_beside(checkpoint, "gate.json") is not None)
    (tmp / "model_card.md").write_text(card)
    for source in find_exports(checkpoint):
        if source and payload.get("tumour_evidence") and not OnnxPredictor(source).has_evidence:
            log.warning("%s: made before exports carried the tumour map: left out of the package", source)
        elif source:
            shutil.copy2(source, tmp / Path(source).name)
    for name in ("calibration.json", "gate.json", "shortcut.json"):  # checked when loaded (a foreign gate is refused)
        extra = find_beside(checkpoint, name)
        if extra is not None:
            shutil.copy2(extra, tmp / name)
    write_sums(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out


def evidence_section(record: dict[str, Any] | None) -> str:
    """The model card's words on a tumour map's "no tumour" answer (empty without one)."""
    if not record:
        return ""
    return (f"\n**No tumour from the tumour map**: the model's tumour map finds tumour tissue cell by cell; a "
            f"slice whose strongest cell stays below {float(record['threshold']):.4f} is answered \"no tumour\" "
            f"(fitted on {record.get('fitted_on')}, {100 * float(record.get('quantile', 0)):.0f}% of which fall below "
            "it; new patients' tumour slices may fall below it more often: `brain-tumor shortcut-test` measures it on "
            "unmodified held-out slices). Its ONNX exports (`brain-tumor export`) carry the map; `--engine auto` "
            "runs it in PyTorch or ONNX Runtime fp32, which answer as training measured; int8 and OpenVINO's bf16 "
            "move single slices near the threshold.\n")
