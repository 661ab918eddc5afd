"""Real inputs and a corpus of bad files: every bad one gives one clear line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from brain_tumor.data.imageio import ImageReadError, read_slice


def _dicom(path: Path, pixels: np.ndarray | None, photometric: str = "MONOCHROME2") -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


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
