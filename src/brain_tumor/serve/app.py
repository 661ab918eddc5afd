"""FastAPI app: POST /v1/predict, GET /v1/health, GET /v1/model, and the page at /.

The loaded model is :mod:`brain_tumor.serve.service`, its settings :mod:`brain_tumor.serve.settings`,
upload limits :mod:`brain_tumor.serve.uploads`, error responses :mod:`brain_tumor.serve.problems`."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from brain_tumor.answers import Prediction
from brain_tumor.hardware import detect_cpu
from brain_tumor.serve.problems import _problem, _validation_detail
from brain_tumor.serve.schemas import (
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
from brain_tumor.serve.service import NOTICE, Service
from brain_tumor.serve.settings import ServiceSettings
from brain_tumor.serve.uploads import BodyLimit, sniff_suffix
from brain_tumor.study import aggregate

__all__ = ["API_PREFIX", "MAX_STUDY_FILES", "NOTICE", "BodyLimit", "ServiceSettings", "create_app"]

access_log = logging.getLogger("brain_tumor.access")
STATIC = Path(__file__).parent / "static"


API_PREFIX = "/v1"
MAX_STUDY_FILES = 64  # files in one /v1/study request
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when the service has a key.")


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
            image: Annotated[bool, Query(description="Also return the slice as the model saw it (a base64 PNG).")]
            = False,
    ) -> PredictionOut:
        """Classify one slice (micro-batched with concurrent requests); Grad-CAM and the model's view
        of the slice on request."""
        tensor = await read_upload(file)
        prediction = await predict_tensor(tensor)
        images = await run_in_threadpool(service.explain, tensor) if explain else None
        return service.answer(prediction, tensor, images, with_image=image)

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
