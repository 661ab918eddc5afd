"""Real inputs and a corpus of bad files: every bad one gives one clear line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from brain_tumor.data.imageio import ImageReadError, read_slice
from tests.corpus import _dicom  # noqa: F401  (re-exported: other tests import it from here)


def gradient(size: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_png_modes(tmp_path: Path, mode: str) -> None:
    g = gradient()
    if mode == "I;16":
        img = Image.fromarray((g * 65535).astype(np.uint16))
    else:
        img = Image.fromarray((g * 255).astype(np.uint8)).convert(mode)
    img.save(tmp_path / "x.png")
    out = read_slice(tmp_path / "x.png")
    assert out.shape == (64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, g, atol=0.01)


def test_dicom_rescale_and_monochrome1(tmp_path: Path) -> None:
    pixels = (gradient() * 1000).astype(np.uint16)
    plain = read_slice(_dicom(tmp_path / "a.dcm", pixels))
    inverted = read_slice(_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1"))
    np.testing.assert_allclose(plain, gradient(), atol=0.01)
    np.testing.assert_allclose(inverted, 1 - plain, atol=1e-6)


def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.jpg"
    Image.fromarray((gradient(256) * 255).astype(np.uint8)).save(good)
    files = {
        "truncated": tmp_path / "truncated.jpg",
        "empty": tmp_path / "empty.jpg",
        "text": tmp_path / "text.jpg",
        "bomb": tmp_path / "bomb.png",
        "dicom_no_pixels": tmp_path / "nopix.dcm",
        "mat_no_cjdata": tmp_path / "other.mat",
        "unknown_type": tmp_path / "notes.txt",
        "missing": tmp_path / "missing.png",
    }
    files["truncated"].write_bytes(good.read_bytes()[:400])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    Image.new("1", (9000, 9000)).save(files["bomb"])  # 81 Mpx, a few KB on disk
    _dicom(files["dicom_no_pixels"], None)
    with h5py.File(files["mat_no_cjdata"], "w") as f:
        f["something"] = np.zeros(3)
    files["unknown_type"].write_text("x")
    return files


def test_bad_files_give_one_line_each(tmp_path: Path) -> None:
    for kind, path in bad_files(tmp_path).items():
        with pytest.raises(ImageReadError) as info:
            read_slice(path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, kind


def test_declared_size_is_refused_before_decoding(tmp_path: Path) -> None:
    """A few KB of MATLAB v7.3 or DICOM declaring a gigapixel image: refused by the header alone."""
    import resource

    import h5py

    mat = tmp_path / "bomb.mat"
    with h5py.File(mat, "w") as f:
        cj = f.create_group("cjdata")
        cj.create_dataset("image", shape=(20000, 20000), dtype="f8", compression="gzip", fillvalue=0.5)
        cj["label"] = np.array([[1.0]])
        cj["PID"] = np.array([[ord("1")]], dtype="u2")
    assert mat.stat().st_size < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageReadError, match="too large"):
        read_slice(mat)
    dcm = _dicom(tmp_path / "bomb.dcm", np.zeros((16, 16), np.uint16))
    import pydicom

    ds = pydicom.dcmread(dcm)
    ds.Rows, ds.Columns = 30000, 30000  # the header lies; the pixels are never decoded
    ds.save_as(dcm)
    with pytest.raises(ImageReadError, match="too large"):
        read_slice(dcm)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500  # ru_maxrss is in KB on Linux; decoding either would take gigabytes


def test_non_finite_and_constant_images_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    nan = np.full((32, 32), np.nan, np.float32)
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tiff")
    with pytest.raises(ImageReadError, match="non-finite"):
        read_slice(tmp_path / "nan.tiff")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(ImageReadError, match="constant image"):
        read_slice(tmp_path / "flat.png")


def test_multi_frame_dicom_decodes_the_frame_asked_for(tmp_path: Path) -> None:
    import pydicom

    path = _dicom(tmp_path / "one.dcm", np.zeros((16, 16), np.uint16))
    ds = pydicom.dcmread(path)
    frames = np.stack([np.full((16, 16), 100 * (k + 1), np.uint16) for k in range(3)])
    frames[:, :4] = 0  # some contrast in every frame
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(path)
    assert read_slice(path, frame=2).max() == pytest.approx(1.0)
    with pytest.raises(ImageReadError, match="no frame 5"):
        read_slice(path, frame=5)
    with pytest.raises(ImageReadError, match="pick a frame"):
        read_slice(path)
