"""Property-based fuzzing of the decoders: any bytes under any name give an image or one line."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brain_tumor.data.imageio import ImageReadError, read_slice

# the magic bytes each decoder keys on, so the fuzzer reaches past the first check of each
HEADS = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"BM", b"\0" * 128 + b"DICM",
         b"MATLAB 7.3 MAT-file" + b"\0" * 493 + b"\x89HDF\r\n\x1a\n", b"\x89HDF\r\n\x1a\n"]
SUFFIXES = [".jpg", ".png", ".tif", ".bmp", ".dcm", ".mat", ".gif", ""]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(head=st.sampled_from(HEADS), body=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_give_an_image_or_one_line(head: bytes, body: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(head + body)
        try:
            image = read_slice(path)
        except ImageReadError as exc:
            message = str(exc)
            assert message and "\n" not in message and str(path) in message
            return
        assert image.ndim == 2 and image.dtype == np.float32 and np.isfinite(image).all()
        assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


@settings(max_examples=60, deadline=None, database=None)
@given(rows=st.integers(0, 65535), cols=st.integers(0, 65535), frames=st.integers(0, 10_000),
       bits=st.sampled_from([1, 8, 12, 16, 32]))
def test_dicom_headers_that_lie_are_refused_or_read(rows: int, cols: int, frames: int, bits: int) -> None:
    import pydicom

    from tests.test_imageio import _dicom

    with tempfile.TemporaryDirectory() as tmp:
        path = _dicom(Path(tmp) / "x.dcm", (np.arange(256, dtype=np.uint16).reshape(16, 16)))
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = rows, cols
        ds.NumberOfFrames, ds.BitsAllocated = frames, bits
        ds.save_as(path)
        try:
            image = read_slice(path, frame=0 if frames > 1 else None)
        except ImageReadError as exc:
            assert "\n" not in str(exc)
            return
        assert image.ndim == 2 and np.isfinite(image).all()
