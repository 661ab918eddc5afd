"""The service keeps the contract its OpenAPI document promises: schemathesis with every check on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from brain_tumor.serve.app import ServiceSettings, create_app
from tests.conftest import synthetic_slice

OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def app(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    return create_app(ServiceSettings(tiny_checkpoint, max_upload_bytes=256 * 1024))


def contract_config() -> schemathesis.Config:
    """All checks on. One allowance, stated: a multipart ``format: binary`` schema cannot say "a
    decodable JPG/PNG/DICOM/.mat of at most N MB", so schema-valid random bytes sent to the upload
    operations may be refused with their documented 413/415/422."""
    upload = {"positive_data_acceptance": {"expected-statuses": ["2xx", "413", "415", "422"]}}
    return schemathesis.Config.from_dict({
        "checks": {"enabled": True},
        "operations": [{"include-path": path, "checks": upload} for path in ("/v1/predict", "/v1/study")],
    })


def test_committed_openapi_document_matches_the_app(app) -> None:  # type: ignore[no-untyped-def]
    """A change of contract shows in review: docs/openapi.json is the app's document
    (regenerate: python -m brain_tumor.serve.openapi docs/openapi.json)."""
    from brain_tumor.serve.openapi import openapi_document

    assert json.loads(OPENAPI.read_text()) == openapi_document(app)


def test_every_operation_documents_its_errors_as_problems(app) -> None:  # type: ignore[no-untyped-def]
    paths = app.openapi()["paths"]
    assert set(paths) == {"/v1/health", "/v1/ready", "/v1/model", "/v1/predict", "/v1/study"}
    assert {"413", "415", "422", "500"} <= set(paths["/v1/predict"]["post"]["responses"])
    for path in paths.values():
        for operation in path.values():
            assert "500" in operation["responses"]
            assert "application/problem+json" in operation["responses"]["500"]["content"]


def documented_operations() -> list[tuple[str, str]]:
    """Every operation of the committed document (which must equal the app's: see above), so a new
    endpoint is fuzzed as soon as it is documented."""
    paths = json.loads(OPENAPI.read_text())["paths"]
    return [(method.upper(), path) for path, ops in sorted(paths.items()) for method in sorted(ops)]


@pytest.mark.parametrize("method, path", documented_operations())
def test_fuzz_every_endpoint_with_all_checks(app, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """No undocumented status, no schema violation, no valid request rejected, no 500: up to 25
    generated requests (positive and negative) per operation, every schemathesis check on."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=contract_config())
    operation = schema[path][method]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate()

    fuzz()


def test_a_real_slice_gets_a_typed_prediction(app) -> None:  # type: ignore[no-untyped-def]
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(synthetic_slice(np.random.default_rng(0), 1, 96)).save(buffer, format="PNG")
    client = TestClient(app)
    ok = client.post("/v1/predict", files={"file": ("s.png", buffer.getvalue(), "image/png")})
    assert ok.status_code == 200 and set(ok.json()["probabilities"]) == {"glioma", "meningioma", "pituitary"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=contract_config())
    schema["/v1/predict"]["POST"].validate_response(ok)  # the 200 body the fuzzer cannot reach, checked too
    bad = client.post("/v1/predict", files={"file": ("s.txt", b"plain text", "text/plain")})
    assert bad.status_code == 415 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json() == {"type": "about:blank", "title": "Unsupported Media Type", "status": 415,
                          "detail": "unsupported file type: send JPG, PNG, DICOM or figshare .mat"}
    missing = client.post("/v1/predict")
    assert missing.status_code == 422 and missing.json()["status"] == 422 and "file" in missing.json()["detail"]
    assert client.get("/v1/nothing").json()["status"] == 404
