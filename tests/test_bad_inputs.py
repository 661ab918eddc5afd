"""The bad-input corpus against the library, the CLI and the service: one line or a 4xx each,
no traceback, no 500, and the service healthy after every upload."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.data.imageio import ImageReadError, read_slice
from brain_tumor.serve.app import ServiceSettings, create_app
from tests.corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_library(corpus) -> None:  # type: ignore[no-untyped-def]
    for name, entry in corpus.items():
        frame = 0 if name == "dicom_multiframe" else None
        if entry.expect == "ok":
            assert read_slice(entry.path, frame=frame).ndim == 2, name
            continue
        with pytest.raises(ImageReadError) as info:
            read_slice(entry.path)
        assert "\n" not in str(info.value) and str(entry.path) in str(info.value), name


def test_cli_one_line_per_bad_file(corpus, tiny_checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    paths = [str(e.path) for e in corpus.values()]
    # decoding is under test, not scope: the corpus's readable images are not MRI-like
    result = CliRunner().invoke(app, ["predict", *paths, "-m", str(tiny_checkpoint), "--no-scope-check"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    bad = [e for n, e in corpus.items() if e.expect == "error" and n != "directory_named_png"]
    good = sum(3 if n == "dicom_multiframe" else 1 for n, e in corpus.items() if e.expect == "ok")
    assert f"{good} predicted, 0 refused as out of scope, {len(bad)} failed, 1 skipped" in result.output  # the folder
    assert f"skipped: {corpus['directory_named_png'].path} (a folder" in result.output
    for entry in bad:
        assert sum(str(entry.path) in line for line in result.output.splitlines() if line.startswith("error")) == 1


def test_service_answers_4xx_and_stays_healthy(corpus, tiny_checkpoint: Path) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(create_app(ServiceSettings(tiny_checkpoint, max_upload_bytes=4 * 1024 * 1024,
                                                   scope_check=False)))  # decoding under test, not scope
    for name, entry in corpus.items():
        if not entry.path.is_file():
            continue
        r = client.post("/v1/predict", files={"file": ("upload", entry.path.read_bytes())})
        expected = {200} if entry.expect == "ok" and name != "dicom_multiframe" else {413, 415, 422}
        assert r.status_code in expected, (name, r.status_code, r.text[:200])
        assert "Traceback" not in r.text and str(entry.path.parent) not in r.text
        assert client.get("/v1/health").status_code == 200
