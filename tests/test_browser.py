"""The page in a real browser: Playwright drives Debian's Chromium against a live server."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA, synthetic_slice

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    import uvicorn

    from brain_tumor.serve.app import ServiceSettings, create_app

    # a trained model for the committed screenshot: BRAIN_TUMOR_SERVE_CHECKPOINT=runs/.../model.pt
    checkpoint = Path(os.environ.get("BRAIN_TUMOR_SERVE_CHECKPOINT", tiny_checkpoint))
    port = free_port()
    app = create_app(ServiceSettings(checkpoint))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(5)


def test_upload_shows_prediction_and_overlay(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    slice_path = DATA / "meningioma" / "1.jpg"
    if not slice_path.is_file():
        slice_path = tmp_path / "slice.png"
        Image.fromarray(synthetic_slice(np.random.default_rng(0), 1, 256)).save(slice_path)
    shots = Path(os.environ.get("BRAIN_TUMOR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(server)
        assert "Not a medical device" in page.inner_text("#notice")
        page.set_input_files("#file", str(slice_path))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        predicted = page.inner_text("#predicted")
        assert predicted in ("glioma", "meningioma", "pituitary")
        assert page.locator(".bar").count() == 3
        assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
        assert page.evaluate("document.getElementById('overlay').naturalWidth") > 0
        page.uncheck("#show-cam")
        assert page.locator("#overlay").is_hidden()
        page.check("#show-cam")
        page.screenshot(path=str(shots / "browser.png"), full_page=True)
        page.set_input_files("#file", str(Path(__file__)))  # a .py file: refused with a message
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "unsupported file type" in page.inner_text("#error")
        browser.close()
    assert (shots / "browser.png").stat().st_size > 10_000


def test_several_slices_get_one_answer_per_patient(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(1)
    files = []
    for i in range(3):
        files.append(tmp_path / f"slice-{i}.png")
        Image.fromarray(synthetic_slice(rng, 1, 128)).save(files[-1])
    files.append(tmp_path / "broken.png")
    files[-1].write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(server)
        page.set_input_files("#file", [str(f) for f in files])
        page.wait_for_selector("#study:not([hidden])", timeout=60_000)
        answer = page.inner_text("#study-answer")
        assert answer.split(": ")[1] in ("glioma", "meningioma", "pituitary")
        assert "from 3 slices" in page.inner_text("#study-detail")
        rows = page.locator("#study-slices tbody tr")
        assert rows.count() == 4
        assert "refused" in rows.nth(3).inner_text()
        assert page.locator("#result").is_hidden()
        browser.close()
