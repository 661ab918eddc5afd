"""The service's settings: what it loads and what it accepts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceSettings:
    """What the service loads and what it accepts."""

    checkpoint: Path
    max_upload_bytes: int = 20 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    model_card: Path | None = None
    precision: str = "auto"  # PyTorch path: auto | fp32 | bf16 (brain_tumor.hardware)
    engine: str = "auto"  # auto | pytorch | onnx | openvino
    onnx: Path | None = None
    threads: int | None = None
    calibration: Path | None = None  # calibration.json (default: one beside the model)
    gate: Path | None = None  # the no-tumour gate.json (default: one beside the model)
    tta: str = "none"  # test-time augmentation: none | flip (brain_tumor.inference.TTA_MODES)
    scope_check: bool = True  # refuse (422, with the reason) images that are plainly not MRI slices
    body_timeout_s: float = 30.0  # a stalled upload (no bytes for this long) gets 408
    upload_deadline_s: float = 300.0  # and so does one whose whole body takes longer than this
    max_concurrent_decodes: int = 2  # images decoded at once: bounds the memory uploads can take
    api_key: str | None = None  # when set, every /v1 call needs the header X-API-Key: <key>
    max_batch: int = 16  # micro-batching: at most this many images per forward pass ...
    max_wait_ms: float = 5.0  # ... gathered for at most this long after the first one
    request_timeout_s: float = 120.0  # a prediction not done by then gets 503
