"""Out-of-scope refusal (``brain_tumor.scope``): plainly non-MRI images are refused with a reason
before the model, MRI-like slices pass; in predict, evaluate --data and the service."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import skimage
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.data.imageio import colour_share, read_slice
from brain_tumor.scope import check_file_scope, check_scope
from brain_tumor.serve.app import ServiceSettings, create_app
from tests.conftest import synthetic_slice

SAMPLES = Path(skimage.__file__).parent / "data"  # images bundled with scikit-image: offline


def head(size: int = 128, seed: int = 0) -> np.ndarray:
    """A grey head on dark air, with some texture and a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.where((yy - 0.5) ** 2 / 0.16 + (xx - 0.5) ** 2 / 0.12 < 1, 0.35, 0.02)
    image[40:60, 50:70] = 0.9
    return np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1).astype(np.float32)


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_a_head_slice_passes_and_each_kind_of_non_mri_is_refused_with_its_reason() -> None:
    assert check_scope(head()).in_scope
    rng = np.random.default_rng(1)
    assert "noise" in str(check_scope(rng.random((128, 128)).astype(np.float32)).reason)
    assert "blank" in str(check_scope(np.full((64, 64), 0.5, np.float32) + rng.normal(0, 1e-3, (64, 64))).reason)
    document = np.ones((128, 128), np.float32)
    document[20:24, 10:110] = document[40:44, 10:90] = 0.0  # lines of "text" on white paper
    assert "edges are bright" in str(check_scope(document).reason)
    speck = np.zeros((128, 128), np.float32)
    speck[60:80, 60:80] = 1.0  # a small bright square on black (2% of the image): no head
    assert "no head" in str(check_scope(speck).reason)
    assert "colour" in str(check_scope(head(), colour=0.6).reason)


def test_a_16_bit_file_holding_few_bits_is_not_blank(tmp_path: Path) -> None:
    path = tmp_path / "eight-bits-in-sixteen.png"
    Image.fromarray((255 * head()).astype(np.uint16)).save(path)  # values up to 255 of 65535
    image = read_slice(path)
    assert image.max() < 0.01 and check_file_scope(path, image).in_scope


def test_elongated_and_tiny_images_are_judged_without_warnings() -> None:
    with np.errstate(all="raise"):
        strip = np.tile(head(64)[32:40], (1, 32))  # 8 x 2048
        assert np.isfinite(check_scope(strip).noise)  # the 1-pixel-high shrink gave NaN and skipped the check
        check_scope(head(8))


def test_colour_hidden_under_transparent_pixels_does_not_count(tmp_path: Path) -> None:
    grey = (255 * head()).astype(np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    rgba[:64, :, 0], rgba[:64, :, 3] = 255, 0  # red, but fully transparent: read_slice sees black
    path = save(rgba, tmp_path / "rgba.png")
    assert colour_share(path) == 0.0


@pytest.mark.parametrize("name, reason", [("text.png", "edges are bright"), ("page.png", "edges are bright"),
                                          ("astronaut.png", "colour"), ("chelsea.png", "colour")])
def test_bundled_photos_and_documents_are_refused(name: str, reason: str) -> None:
    path = SAMPLES / name
    assert reason in str(check_file_scope(path, read_slice(path)).reason)


def test_colour_share_is_zero_for_grey_even_when_stored_as_rgb_or_with_a_banner(tmp_path: Path) -> None:
    grey = (255 * head()).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    assert colour_share(save(rgb, tmp_path / "rgb.png")) == 0.0
    assert colour_share(save(grey, tmp_path / "grey.png")) == 0.0
    rgb[:8, :, 2] = 230  # a blue banner across the top: 6% of the pixels
    assert 0.05 < colour_share(save(rgb, tmp_path / "banner.png")) < 0.1
    assert check_file_scope(tmp_path / "banner.png", read_slice(tmp_path / "banner.png")).in_scope
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[:32, :, 0] = 220
    colour[32:, :, 2] = 220
    assert colour_share(save(colour, tmp_path / "colour.png")) == 1.0


def test_predict_refuses_out_of_scope_files_and_goes_on(tiny_checkpoint: Path, tmp_path: Path) -> None:
    mri = save((255 * head()).astype(np.uint8), tmp_path / "mri.png")
    photo = tmp_path / "astronaut.png"
    photo.write_bytes((SAMPLES / "astronaut.png").read_bytes())
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(mri), str(photo), "-m", str(tiny_checkpoint), "--csv", str(out)])
    assert result.exit_code == 0, result.output  # a refusal is an answer, not a failure
    assert "refused:" in result.output and "colour image" in result.output
    assert "1 predicted, 1 refused as out of scope, 0 failed" in result.output
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert rows["astronaut.png"]["out_of_scope"].startswith("it is a colour image")
    assert not rows["mri.png"]["out_of_scope"]
    anyway = CliRunner().invoke(app, ["predict", str(photo), "-m", str(tiny_checkpoint), "--no-scope-check"])
    assert anyway.exit_code == 0 and "1 predicted, 0 refused" in anyway.output


def test_the_service_refuses_with_the_reason_and_stays_healthy(tiny_checkpoint: Path) -> None:
    client = TestClient(create_app(ServiceSettings(tiny_checkpoint, max_upload_bytes=4 * 1024 * 1024)))
    buffer = io.BytesIO()
    Image.fromarray(synthetic_slice(np.random.default_rng(0), 1, 96)).save(buffer, format="PNG")
    refused = client.post("/v1/predict", files={"file": ("cat.png", (SAMPLES / "chelsea.png").read_bytes())})
    assert refused.status_code == 422 and "out of scope: it is a colour image" in refused.json()["detail"]
    assert client.post("/v1/predict", files={"file": ("s.png", buffer.getvalue())}).status_code == 200
    assert client.get("/v1/health").status_code == 200


def test_evaluate_data_counts_out_of_scope_images_as_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    collection = tmp_path / "collection"
    (collection / "no_tumor").mkdir(parents=True)
    (collection / "glioma").mkdir()
    for i in range(3):
        save((255 * head(seed=i)).astype(np.uint8), collection / "no_tumor" / f"{i}.png")
        save((255 * head(seed=10 + i)).astype(np.uint8), collection / "glioma" / f"{i}.png")
    (collection / "no_tumor" / "cat.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_checkpoint), "--data", str(collection),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_out_of_scope"] == 1 and metrics["n_unreadable"] == 0 and metrics["no_tumour"]["n"] == 4
    assert metrics["no_tumour"]["refused"] >= 0.25
    outcomes = {Path(r["path"]).name: r["outcome"] for r in csv.DictReader((out / "outcomes.csv").open())}
    assert outcomes["cat.png"] == "refused: out of scope"
