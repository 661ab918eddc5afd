"""The HTTP API, including each abuse case."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brain_tumor.serve.app import ServiceSettings, create_app
from tests.conftest import synthetic_slice
from tests.test_imageio import _dicom


@pytest.fixture(scope="module")
def client(tiny_checkpoint: Path) -> TestClient:
    return TestClient(create_app(ServiceSettings(tiny_checkpoint, max_upload_bytes=1024 * 1024)))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_model_and_page(client: TestClient) -> None:
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    compute = health["compute"]  # what precision/engine/threads were chosen at start, and why
    assert compute["engine"]["engine"] in ("pytorch", "onnx") and compute["engine"]["reason"]
    assert compute["precision"]["requested"] == "auto"
    assert compute["precision"]["precision"] in ("32-true", "bf16-mixed")
    assert compute["threads"]["intra_op"] >= 1 and health["cpu"]["kind"]
    model = client.get("/v1/model").json()
    assert model["class_names"] == ["glioma", "meningioma", "pituitary"] and "diagnosis" in model["notice"]
    page = client.get("/")
    assert page.status_code == 200 and "Grad-CAM" in page.text and "http" not in page.text.split("<script>")[1]
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_png_and_dicom(client: TestClient, tmp_path: Path) -> None:
    image = synthetic_slice(np.random.default_rng(0), 2, 128)
    r = client.post("/v1/predict?explain=true", files={"file": ("../../etc/passwd", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5 and body["predicted"] in body["probabilities"]
    assert body["confidence"] > 0 and body["overlay_png"] and body["image_png"]  # explained: the slice comes too
    dcm = _dicom(tmp_path / "a.dcm", image.astype(np.uint16) * 4)
    assert client.post("/v1/predict", files={"file": ("x.bin", dcm.read_bytes())}).status_code == 200


@pytest.mark.parametrize("payload, status, message", [
    (b"hello, I am text", 415, "unsupported file type"),
    (b"", 422, "empty file"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, 422, "upload: cannot read the image (damaged, truncated"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024 + 10), 413, "larger than 1 MB"),
])
def test_abuse(client: TestClient, payload: bytes, status: int, message: str) -> None:
    r = client.post("/v1/predict", files={"file": ("x.jpg", payload, "image/jpeg")})
    assert r.status_code == status and message in r.json()["detail"]
    assert "Traceback" not in r.text and "/tmp" not in r.text


def test_decompression_bomb_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 1024 * 1024
    r = client.post("/v1/predict", files={"file": ("bomb.png", buffer.getvalue(), "image/png")})
    assert r.status_code == 422 and "too large" in r.json()["detail"]


def test_cors_closed_by_default(client: TestClient, tiny_checkpoint: Path) -> None:
    headers = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/predict", headers=headers).headers
    opened = TestClient(create_app(ServiceSettings(tiny_checkpoint, cors_origins=("https://ok.example",))))
    r = opened.options("/v1/predict", headers={**headers, "Origin": "https://ok.example"})
    assert r.headers.get("access-control-allow-origin") == "https://ok.example"


def test_chunked_upload_is_cut_off_at_the_limit(client: TestClient) -> None:
    """No Content-Length: the body is counted as it streams and refused once past the limit."""
    sent = {"bytes": 0}

    def chunks():  # type: ignore[no-untyped-def]
        head = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n\x89PNG\r\n\x1a\n"
        yield head
        for _ in range(64):  # 64 x 64 KB = 4 MB offered against a 1 MB limit
            sent["bytes"] += 65536
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert "larger than 1 MB" in r.json()["detail"]


def test_body_limit_stops_reading_at_the_limit_and_times_out_stalls() -> None:
    """The middleware pulls only as many chunks as the limit allows; a silent client gets 408."""
    import asyncio

    from fastapi import HTTPException

    from brain_tumor.serve.app import BodyLimit

    pulled = {"n": 0}

    async def endless() -> dict[str, object]:
        pulled["n"] += 1
        return {"type": "http.request", "body": b"\0" * 100, "more_body": True}

    async def reader(scope: object, receive, send) -> None:  # type: ignore[no-untyped-def]
        while (await receive())["more_body"]:
            pass

    async def stalled() -> dict[str, object]:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"", "more_body": False}

    with pytest.raises(HTTPException) as too_large:
        asyncio.run(BodyLimit(reader, max_bytes=1000, timeout_s=5)({"type": "http"}, endless, None))
    assert too_large.value.status_code == 413 and pulled["n"] == 11
    with pytest.raises(HTTPException) as stall:
        asyncio.run(BodyLimit(reader, max_bytes=1000, timeout_s=0.05)({"type": "http"}, stalled, None))
    assert stall.value.status_code == 408 and "stalled" in str(stall.value.detail)

    async def trickle() -> dict[str, object]:  # a byte every 20 ms: never stalls, never finishes
        await asyncio.sleep(0.02)
        return {"type": "http.request", "body": b"\0", "more_body": True}

    with pytest.raises(HTTPException) as slow:
        asyncio.run(BodyLimit(reader, max_bytes=10**6, timeout_s=0.1, deadline_s=0.3)({"type": "http"}, trickle, None))
    assert slow.value.status_code == 408 and "longer than 0.3 s" in str(slow.value.detail)


def test_api_key_when_configured(tiny_checkpoint: Path) -> None:
    locked = TestClient(create_app(ServiceSettings(tiny_checkpoint, api_key="s3cret")))
    refused = locked.get("/v1/health")
    assert refused.status_code == 401 and refused.json()["status"] == 401
    assert locked.get("/v1/health", headers={"X-API-Key": "wrong"}).status_code == 401
    assert locked.get("/v1/health", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert "401" in locked.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["responses"]


def test_micro_batcher_groups_concurrent_requests_and_keeps_their_order() -> None:
    import asyncio

    from brain_tumor.serve.batching import MicroBatcher

    seen: list[int] = []

    def double(items):  # type: ignore[no-untyped-def]
        seen.append(len(items))
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=4, max_wait_ms=50)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert asyncio.run(many()) == [2 * i for i in range(10)]
    assert sum(seen) == 10 and max(seen) == 4 and len(seen) == 3  # 4 + 4 + 2, not 10 forward passes

    def broken(items):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(MicroBatcher(broken, max_batch=2, max_wait_ms=1).submit(1))


def test_explain_on_demand_study_ready_and_metrics(client: TestClient) -> None:
    image = png_bytes(synthetic_slice(np.random.default_rng(1), 0, 96))
    plain = client.post("/v1/predict", files={"file": ("s.png", image)}).json()
    assert plain["overlay_png"] is None and plain["cam_png"] is None and plain["image_png"] is None
    assert client.post("/v1/predict?image=true", files={"file": ("s.png", image)}).json()["image_png"]
    explained = client.post("/v1/predict?explain=true", files={"file": ("s.png", image)}).json()
    assert explained["overlay_png"] and explained["cam_png"]
    assert explained["probabilities"] == pytest.approx(plain["probabilities"], abs=1e-4)

    other = png_bytes(synthetic_slice(np.random.default_rng(2), 0, 96))
    files = [("files", ("a.png", image)), ("files", ("b.png", other)), ("files", ("c.txt", b"not an image"))]
    study = client.post("/v1/study", files=files).json()
    assert [s["file"] for s in study["slices"]] == ["a.png", "b.png", "c.txt"]
    assert study["slices"][2]["error"]["status"] == 415 and study["slices"][2]["prediction"] is None
    assert study["study"]["n_slices"] == 2 and study["study"]["predicted"] in ("glioma", "meningioma", "pituitary")
    bad_only = client.post("/v1/study", files=[("files", ("c.txt", b"nope"))]).json()
    assert bad_only["study"] is None

    ready = client.get("/v1/ready").json()
    assert ready["status"] == "ready" and ready["images"] >= 4
    metrics = client.get("/metrics").text
    assert "brain_tumor_batch_size_count" in metrics and "http_requests_total" in metrics
