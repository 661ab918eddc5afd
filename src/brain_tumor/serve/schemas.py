"""The service's contract: typed request/response bodies and one error format (RFC 9457)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details: every 4xx/5xx answer has this shape."""

    type: str = Field("about:blank", description="A URI naming the problem type; about:blank for plain HTTP errors.")
    title: str = Field(description="The HTTP status phrase.", examples=["Unsupported Media Type"])
    status: int = Field(description="The HTTP status code.", examples=[415])
    detail: str = Field(description="What went wrong with this request, in one line.",
                        examples=["unsupported file type: send JPG, PNG, DICOM or figshare .mat"])


class PredictionOut(BaseModel):
    """The model's answer for one uploaded slice, with the images the page shows."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "predicted": "meningioma", "confidence": 0.97, "refer": False, "calibrated": True,
        "probabilities": {"glioma": 0.02, "meningioma": 0.97, "pituitary": 0.01},
        "ood_score": 0.12, "out_of_distribution": False, "prediction_set": ["meningioma"], "set_confidence": 0.95,
        "image_png": "iVBORw0KGgo...", "overlay_png": "iVBORw0KGgo...", "cam_png": "iVBORw0KGgo...",
        "notice": "Research use only. Not a medical device and not for diagnosis."}]})

    predicted: str = Field(description="The most probable class, or `no_tumour` when the model is served with a "
                                       "no-tumour gate and the gate finds no tumour, or when the model's tumour map "
                                       "finds no tumour tissue (see `no_tumour_from`).")
    confidence: float = Field(ge=0, le=1, description="Calibrated probability of the predicted class "
                                                      "(uncalibrated when `calibrated` is false; for `no_tumour`, the "
                                                      "gate's probability or 1 - `tumour_evidence`, uncalibrated).")
    refer: bool = Field(description="True when the answer should go to a human: low confidence or out of distribution.")
    calibrated: bool = Field(description="Whether a validated temperature and referral threshold are applied.")
    probabilities: dict[str, float] = Field(description="Uncalibrated softmax probability of each class.")
    ood_score: float | None = Field(None, description="Feature distance to the training slices (when the model "
                                                      "carries an OOD detector).")
    out_of_distribution: bool | None = Field(None, description="ood_score above the detector's threshold.")
    prediction_set: list[str] | None = Field(
        None, description="The classes the true one lies among with probability `set_confidence` (a conformal "
                          "prediction set; when the model is served with a calibration). Several classes: the model "
                          "cannot tell them apart for this slice; none: it fits no class.")
    set_confidence: float | None = Field(None, gt=0, lt=1, description="The stated coverage of `prediction_set`.")
    p_no_tumour: float | None = Field(None, ge=0, le=1, description="The no-tumour gate's probability that the "
                                                                    "slice holds no tumour (with a gate).")
    tumour_evidence: float | None = Field(None, ge=0, le=1, description="How strongly the model's tumour map finds "
                                          "tumour tissue anywhere in the slice (a model trained with a tumour map); "
                                          "below the model's threshold the answer is no_tumour.")
    no_tumour_from: Literal["gate", "tumour_map"] | None = Field(
        None, description="With a no_tumour answer, which check gave it: the no-tumour gate or the tumour map.")
    image_png: str | None = Field(None, description="The slice as the model saw it, base64 PNG (with "
                                                    "?image=true, or ?explain=true).")
    overlay_png: str | None = Field(None, description="Grad-CAM overlaid on the slice, base64 PNG "
                                                      "(with ?explain=true).")
    cam_png: str | None = Field(None, description="The Grad-CAM map alone, base64 8-bit PNG (with ?explain=true).")
    notice: str = Field(description="Intended-use notice.")


class PrecisionOut(BaseModel):
    requested: str
    precision: str
    device: str
    reason: str
    warning: str | None = None
    probe: dict[str, Any] | None = Field(None, description="The bf16 timing behind the choice, where one was made.")


class EngineOut(BaseModel):
    engine: Literal["pytorch", "onnx", "openvino"]
    precision: str
    onnx_path: str | None = None
    reason: str
    inference_precision: str | None = None  # OpenVINO: what it runs at on this CPU (bf16 where native)


class ThreadsOut(BaseModel):
    intra_op: int
    inter_op: int
    reason: str


class ComputeOut(BaseModel):
    """The inference path chosen at start, and why (see brain_tumor.hardware)."""

    precision: PrecisionOut
    engine: EngineOut
    threads: ThreadsOut
    calibration: str | None = Field(None, description="The calibration.json applied (temperature, referral "
                                                      "threshold, prediction sets), if any.")
    gate: str | None = Field(None, description="The no-tumour gate.json applied, if any.")
    tta: Literal["none", "flip"] = Field("none", description="Test-time augmentation: flip averages the logits "
                                                             "of each slice and its mirror.")


class CpuOut(BaseModel):
    model: str
    kind: str
    capabilities: dict[str, bool]


class HealthOut(BaseModel):
    """The service is up, and on which compute path."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ok",
        "compute": {"precision": {"requested": "auto", "precision": "32-true", "device": "cpu",
                                  "reason": "CPU amd-f25m1-avx2 has no native bf16 (no AVX512_BF16/AMX): fp32",
                                  "warning": None},
                    "engine": {"engine": "onnx", "precision": "int8", "onnx_path": "model.int8.onnx",
                               "reason": "ONNX Runtime int8: the fastest measured CPU path present"},
                    "threads": {"intra_op": 2, "inter_op": 1, "reason": "one per usable core (2)"}},
        "cpu": {"model": "AMD EPYC 7B13", "kind": "amd-f25m1-avx2",
                "capabilities": {"avx2": True, "avx512": False, "vnni": False, "avx512_bf16": False, "amx": False,
                                 "native_bf16": False}}}]})

    status: Literal["ok"]
    compute: ComputeOut
    cpu: CpuOut


class ModelOut(BaseModel):
    """What the loaded model is: classes, preprocessing, calibration, metrics, model card."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "class_names": ["glioma", "meningioma", "pituitary"], "architecture": "resnet50-v1",
        "preprocessing": {"mean": [0.482, 0.458, 0.408], "std": [0.0039, 0.0039, 0.0039], "image_size": 224,
                          "pipeline": "paper"},
        "calibration": {"temperature": 1.3, "refer_threshold": 0.8}, "metrics": {"val_loss": 0.29}, "epoch": 2,
        "ood": {"k": 10, "threshold": 0.31}, "model_card": None,
        "notice": "Research use only. Not a medical device and not for diagnosis."}]})

    class_names: list[str]
    architecture: str
    preprocessing: dict[str, Any]
    calibration: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    epoch: int | None = None
    ood: dict[str, Any] | None = Field(None, description="The OOD detector's settings (k, threshold), "
                                                         "without its feature bank.")
    model_card: str | None = Field(None, description="Markdown model card, when the service was given one.")
    notice: str


class ReadyOut(BaseModel):
    """Readiness: the model is loaded and warm."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready", "batches": 142, "images": 308}]})

    status: Literal["ready"]
    batches: int = Field(description="Micro-batches run so far.")
    images: int = Field(description="Images predicted so far.")


class SliceOut(BaseModel):
    """One file of a study: its prediction, or why it was refused."""

    file: str
    prediction: PredictionOut | None = None
    error: Problem | None = None


class StudyAnswerOut(BaseModel):
    """The answer for the study: the mean of its slices' probabilities."""

    n_slices: int
    predicted: str
    confidence: float = Field(ge=0, le=1)
    agreement: float = Field(ge=0, le=1, description="Share of the slices whose own answer is the study's.")
    refer: bool
    refer_reasons: str
    probabilities: dict[str, float]


class StudyOut(BaseModel):
    """Every slice's answer, and the study's (null when no slice could be read)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "slices": [{"file": "slice-07.dcm", "prediction": None,
                    "error": {"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
                              "detail": "upload: DICOM file has no pixel data"}}],
        "study": {"n_slices": 11, "predicted": "meningioma", "confidence": 0.93, "agreement": 0.91, "refer": False,
                  "refer_reasons": "", "probabilities": {"glioma": 0.04, "meningioma": 0.93, "pituitary": 0.03}},
        "notice": "Research use only. Not a medical device and not for diagnosis."}]})

    slices: list[SliceOut]
    study: StudyAnswerOut | None
    notice: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting each status with the problem format."""
    descriptions = {401: "Missing or wrong X-API-Key (only when the service was started with a key).",
                    408: "The upload stalled (no data for the body timeout).",
                    413: "Upload larger than the limit.",
                    503: "No answer within the request timeout (the service is overloaded).",
                    415: "Not a JPG, PNG, DICOM or figshare .mat file.",
                    422: "Empty, unreadable, non-finite or oversized image, or a malformed request.",
                    500: "Internal error (no details are sent)."}
    return {s: {"model": Problem, "description": descriptions[s],
                "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for s in statuses}
