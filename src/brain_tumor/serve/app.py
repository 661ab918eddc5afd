"""FastAPI app: POST /v1/predict, GET /v1/health, GET /v1/model, and the page at /."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from brain_tumor.data.imageio import ImageReadError, read_slice
from brain_tumor.explain.gradcam import grad_cam, overlay
from brain_tumor.hardware import detect_cpu
from brain_tumor.inference import Prediction
from brain_tumor.model_loading import load_predictor
from brain_tumor.serve.batching import MicroBatcher
from brain_tumor.serve.schemas import (
    PROBLEM_MEDIA_TYPE,
    ComputeOut,
    CpuOut,
    HealthOut,
    ModelOut,
    PredictionOut,
    Problem,
    ReadyOut,
    SliceOut,
    StudyAnswerOut,
    StudyOut,
    problem_responses,
)
from brain_tumor.study import aggregate
from brain_tumor.training.checkpoint import read_checkpoint_meta

log = logging.getLogger(__name__)
access_log = logging.getLogger("brain_tumor.access")


def observe_batch(size: int, seconds: float) -> None:
    """Micro-batch sizes and forward times for /metrics."""
    from prometheus_client import Histogram

    global _BATCH_SIZE, _BATCH_SECONDS
    if _BATCH_SIZE is None:
        _BATCH_SIZE = Histogram("brain_tumor_batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64))
        _BATCH_SECONDS = Histogram("brain_tumor_batch_seconds", "Seconds per micro-batch forward pass")
    _BATCH_SIZE.observe(size)
    _BATCH_SECONDS.observe(seconds)


_BATCH_SIZE: Any = None
_BATCH_SECONDS: Any = None
STATIC = Path(__file__).parent / "static"
NOTICE = "Research use only. Not a medical device and not for diagnosis."


@dataclass(frozen=True)
class ServiceSettings:
    """What the service loads and what it accepts."""

    checkpoint: Path
    max_upload_bytes: int = 20 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    model_card: Path | None = None
    precision: str = "auto"  # PyTorch path: auto | fp32 | bf16 (brain_tumor.hardware)
    engine: str = "auto"  # auto | pytorch | onnx
    onnx: Path | None = None
    threads: int | None = None
    calibration: Path | None = None  # calibration.json (default: one beside the model)
    gate: Path | None = None  # the no-tumour gate.json (default: one beside the model)
    body_timeout_s: float = 30.0  # a stalled upload (no bytes for this long) gets 408
    upload_deadline_s: float = 300.0  # and so does one whose whole body takes longer than this
    max_concurrent_decodes: int = 2  # images decoded at once: bounds the memory uploads can take
    api_key: str | None = None  # when set, every /v1 call needs the header X-API-Key: <key>
    max_batch: int = 16  # micro-batching: at most this many images per forward pass ...
    max_wait_ms: float = 5.0  # ... gathered for at most this long after the first one
    request_timeout_s: float = 120.0  # a prediction not done by then gets 503


def sniff_suffix(head: bytes) -> str | None:
    """File type from magic bytes (never from the client's file name)."""
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"MATLAB 7.3") or head[512:520] == b"\x89HDF\r\n\x1a\n" or head.startswith(b"\x89HDF"):
        return ".mat"
    return None


def client_message(message: str, path: Path) -> str:
    """A read error as a client may see it: no server paths, no decoder internals."""
    message = message.replace(str(path), "upload")
    head, internal, _ = message.partition(": cannot read (")
    return f"{head}: cannot read the image (damaged, truncated or not what its first bytes say)" if internal \
        else message


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Service:
    """The loaded model. Predictions of concurrent requests are micro-batched into one forward
    pass; Grad-CAM is computed only when asked for. One lock, because Grad-CAM hooks the shared
    PyTorch network (an ONNX engine's predictions do not need it)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.predictor = load_predictor(settings.checkpoint, settings.precision, settings.engine, settings.onnx,
                                        settings.threads, settings.calibration, settings.gate)
        engine = self.predictor.compute["engine"]
        log.info("serving %s on %s %s (%s)", settings.checkpoint, engine["engine"], engine["precision"],
                 engine["reason"])
        self.lock = threading.Lock()
        self.decodes = threading.BoundedSemaphore(settings.max_concurrent_decodes)
        self.meta = read_checkpoint_meta(settings.checkpoint)
        self.batcher: MicroBatcher[torch.Tensor, Prediction] = MicroBatcher(
            self.predict_tensors, settings.max_batch, settings.max_wait_ms, on_batch=observe_batch)
        size = self.predictor.preprocessing.image_size
        self.predict_tensors([torch.zeros(1, size, size, dtype=torch.uint8)])  # warm-up: ready means fast
        self.ready = True

    def decode(self, data: bytes, suffix: str) -> torch.Tensor:
        """The upload as the model's uint8 ``[1, S, S]`` input; 422 with a reason if unreadable."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                with self.decodes:  # the full-size image lives only inside the cap
                    return self.predictor.to_tensor(read_slice(path))
            except ImageReadError as exc:
                raise HTTPException(422, client_message(str(exc), path)) from exc

    def predict_tensors(self, tensors: Sequence[torch.Tensor]) -> list[Prediction]:
        """One forward pass for a micro-batch."""
        batch = torch.stack(list(tensors))
        if self.predictor.onnx is not None:
            return self.predictor.predict_batch(batch, ["upload"] * len(batch))
        with self.lock:
            return self.predictor.predict_batch(batch, ["upload"] * len(batch))

    def explain(self, tensor: torch.Tensor) -> dict[str, str]:
        """Grad-CAM of the predicted class: the overlay and the map as base64 PNGs."""
        with self.lock:
            cam = grad_cam(self.predictor.network, self.predictor.normalize, tensor[None])[0]
        grey = tensor[0].numpy()
        return {"overlay_png": _png_base64(overlay(grey, cam)),
                "cam_png": _png_base64((255 * np.clip(cam, 0, 1)).astype(np.uint8))}

    def answer(self, prediction: Prediction, tensor: torch.Tensor, images: dict[str, str] | None) -> PredictionOut:
        result = prediction.row()
        if "prediction_set" in result:
            members = result["prediction_set"]
            result["prediction_set"] = members.split("|") if members else []
            result["set_confidence"] = self.predictor.set_confidence
        for key in ("path", "error", *(f"p_{c}" for c in prediction.probabilities)):
            result.pop(key, None)
        result.update(probabilities=prediction.probabilities, image_png=_png_base64(tensor[0].numpy()),
                      notice=NOTICE, **(images or {}))
        return PredictionOut.model_validate(result)

    def applied_calibration(self) -> dict[str, Any] | None:
        """The calibration the answers use: a calibration.json's (with its source and the sets'
        coverage) where one was applied, else the checkpoint's own."""
        p = self.predictor
        if p.calibration_source is None:
            return self.meta.get("calibration")
        return {"temperature": p.temperature, "refer_threshold": p.refer_threshold, "source": p.calibration_source,
                "set_confidence": p.set_confidence if p.conformal is not None else None}

    def describe(self) -> dict[str, Any]:
        """Classes, preprocessing, calibration, metrics and the model card."""
        card = self.settings.model_card
        return {"class_names": self.meta["class_names"], "architecture": self.meta["architecture"],
                "preprocessing": self.meta["preprocessing"], "calibration": self.applied_calibration(),
                "metrics": self.meta.get("metrics"), "epoch": self.meta.get("epoch"),
                "ood": {k: v for k, v in (self.meta.get("ood") or {}).items() if k != "bank"} or None,
                "model_card": card.read_text() if card and card.is_file() else None, "notice": NOTICE}


API_PREFIX = "/v1"
MAX_STUDY_FILES = 64  # files in one /v1/study request
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when the service has a key.")


class BodyLimit:
    """ASGI middleware: count the request body as it arrives and answer 413 as soon as it passes
    the limit (chunked uploads without Content-Length too, before they are spooled to disk), and
    408 when no bytes arrive for ``timeout_s`` or the whole body takes over ``deadline_s`` (so a
    client trickling a byte now and then cannot hold a connection for ever)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float, deadline_s: float = 300.0) -> None:
        self.app, self.max_bytes, self.timeout_s, self.deadline_s = app, max_bytes, timeout_s, deadline_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received, complete, start = 0, False, time.monotonic()
        limit_mb = self.max_bytes // (1024 * 1024)

        async def limited() -> dict[str, Any]:
            nonlocal received, complete
            if complete:  # after the body: e.g. waiting for a disconnect; no upload limits apply
                return dict(await receive())
            left = self.deadline_s - (time.monotonic() - start)
            try:
                message: dict[str, Any] = await asyncio.wait_for(receive(), max(min(self.timeout_s, left), 0.0))
            except TimeoutError:
                if left <= self.timeout_s:
                    raise HTTPException(408, f"upload took longer than {self.deadline_s:g} s") from None
                raise HTTPException(408, f"upload stalled: no data for {self.timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"file larger than {limit_mb} MB")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


def _problem(status: int, detail: str) -> JSONResponse:
    """An RFC 9457 problem-details response."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request"


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the app; the model is loaded here, once. The API lives under ``/v1``; every error is
    an RFC 9457 problem (``application/problem+json``) documented on its operation."""
    service = Service(settings)
    app = FastAPI(title="brain-tumor", version="1", description="Brain-tumour MRI slice classification. " + NOTICE)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"])

    body_limit = settings.max_upload_bytes + 64 * 1024  # the file plus its multipart envelope
    app.add_middleware(BodyLimit, max_bytes=body_limit, timeout_s=settings.body_timeout_s,
                       deadline_s=settings.upload_deadline_s)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > body_limit:  # refused before any byte is read
            return _problem(413, f"file larger than {settings.max_upload_bytes // (1024 * 1024)} MB")
        return await call_next(request)

    @app.middleware("http")
    async def log_access(request: Request, call_next: Any) -> Any:
        """One structured (JSON) access-log line per request."""
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            access_log.info(json.dumps({"method": request.method, "path": request.url.path, "status": status,
                                        "ms": round(1000 * (time.perf_counter() - start), 1),
                                        "client": request.client.host if request.client else None}))

    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, endpoint="/metrics",
                                                                          include_in_schema=False)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _problem(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _validation_detail(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # no stack traces out
        return _problem(500, "internal error")

    def require_key(key: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
        if settings.api_key and not (key and secrets.compare_digest(key, settings.api_key)):
            raise HTTPException(401, "missing or wrong X-API-Key", headers={"WWW-Authenticate": "APIKey"})

    secured = settings.api_key is not None
    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_key)] if secured else [],
                    responses=problem_responses(500, *((401,) if secured else ())))

    @api.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        """Liveness, and the compute path chosen at start (precision, engine, threads) with the CPU."""
        cpu = detect_cpu().describe()
        return HealthOut(status="ok", compute=ComputeOut.model_validate(service.predictor.compute),
                         cpu=CpuOut(model=cpu["model"], kind=cpu["kind"], capabilities=cpu["capabilities"]))

    @api.get("/ready", response_model=ReadyOut)
    def ready() -> ReadyOut:
        """Readiness: the model is loaded and has answered a warm-up forward pass."""
        return ReadyOut(status="ready", batches=service.batcher.stats.batches,
                        images=service.batcher.stats.items)

    @api.get("/model", response_model=ModelOut)
    def model() -> ModelOut:
        """Classes, preprocessing, calibration, metrics and the model card."""
        return ModelOut.model_validate(service.describe())

    async def read_upload(file: UploadFile) -> torch.Tensor:
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"file larger than {settings.max_upload_bytes // (1024 * 1024)} MB")
        if not data:
            raise HTTPException(422, "empty file")
        suffix = sniff_suffix(data[:1024])
        if suffix is None:
            raise HTTPException(415, "unsupported file type: send JPG, PNG, DICOM or figshare .mat")
        tensor: torch.Tensor = await run_in_threadpool(service.decode, data, suffix)
        return tensor

    async def predict_tensor(tensor: torch.Tensor) -> Prediction:
        try:
            return await asyncio.wait_for(service.batcher.submit(tensor), settings.request_timeout_s)
        except TimeoutError:
            raise HTTPException(503, f"no answer within {settings.request_timeout_s:g} s; try again") from None

    @api.post("/predict", response_model=PredictionOut, responses=problem_responses(408, 413, 415, 422, 503))
    async def predict(file: Annotated[UploadFile, File(
            description="One slice: JPG, PNG (8/16-bit), DICOM or figshare .mat; the type is read from the bytes, "
                        "never from the name.")],
            explain: Annotated[bool, Query(description="Also return the Grad-CAM overlay and map (slower).")] = False,
    ) -> PredictionOut:
        """Classify one slice (micro-batched with concurrent requests); Grad-CAM on request."""
        tensor = await read_upload(file)
        prediction = await predict_tensor(tensor)
        images = await run_in_threadpool(service.explain, tensor) if explain else None
        return service.answer(prediction, tensor, images)

    @api.post("/study", response_model=StudyOut, responses=problem_responses(408, 413, 422, 503))
    async def study(files: Annotated[list[UploadFile], File(
            min_length=1, max_length=MAX_STUDY_FILES,
            description="Slices of one patient or study (JPG, PNG, DICOM, .mat); each is answered or refused on "
                        "its own.")]) -> StudyOut:
        """One answer per slice and one for the study: the mean of its slices' probabilities."""
        if not files or len(files) > MAX_STUDY_FILES:
            raise HTTPException(422, f"send 1 to {MAX_STUDY_FILES} files")

        async def one(upload: UploadFile) -> tuple[Prediction | None, SliceOut]:
            name = (upload.filename or "file")[:200]
            try:
                tensor = await read_upload(upload)
                prediction = await predict_tensor(tensor)
            except HTTPException as exc:
                problem = Problem(title=HTTPStatus(exc.status_code).phrase, status=exc.status_code,
                                  detail=str(exc.detail))
                return None, SliceOut(file=name, error=problem)
            return prediction, SliceOut(file=name, prediction=service.answer(prediction, tensor, None))

        results = await asyncio.gather(*(one(f) for f in files))
        answered = [p for p, _ in results if p is not None]
        group = aggregate(answered, ["study"] * len(answered))
        study_out = StudyAnswerOut.model_validate(group[0].row() | {"probabilities": group[0].probabilities}) \
            if group else None
        return StudyOut(slices=[s for _, s in results], study=study_out, notice=NOTICE)

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
