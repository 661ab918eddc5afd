"""The official figshare release (Cheng et al.): ``N.mat`` files (MATLAB v7.3) and ``cvind.mat``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from brain_tumor.data.limits import check_declared_size

# cjdata.label: 1 meningioma, 2 glioma, 3 pituitary
MAT_LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}


class MatFormatError(ValueError):
    """A .mat file that is not in the figshare layout; the message is one line."""


@dataclass(frozen=True)
class CjData:
    """One slice of the figshare release."""

    image: np.ndarray
    label: str
    patient_id: str
    tumor_mask: np.ndarray | None


def _decode_pid(values: np.ndarray) -> str:
    return "".join(chr(int(c)) for c in np.asarray(values).ravel() if int(c) != 0)


def read_cjdata(path: str | Path) -> CjData:
    """Read the ``cjdata`` struct of one figshare .mat file (HDF5; arrays are stored transposed)."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MatFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file") from exc
    with f:
        if "cjdata" not in f:
            raise MatFormatError(f"{path}: no 'cjdata' struct (not a figshare brain-tumour .mat)")
        cj = f["cjdata"]
        for key in ("image", "label", "PID"):
            if key not in cj:
                raise MatFormatError(f"{path}: cjdata has no '{key}'")
        for key in ("label", "PID"):  # small fields: refuse a header that declares them huge
            if not isinstance(cj[key], h5py.Dataset) or cj[key].size > 256:
                raise MatFormatError(f"{path}: cjdata.{key} is not a small array")
        label = int(np.asarray(cj["label"]).ravel()[0])
        if label not in MAT_LABELS:
            raise MatFormatError(f"{path}: unknown label {label}")
        image = cj["image"]
        if not isinstance(image, h5py.Dataset) or len(image.shape) != 2:
            raise MatFormatError(f"{path}: cjdata.image is not a 2-D array")
        check_declared_size(path, *image.shape)  # before reading: a tiny file may declare gigapixels
        mask = cj.get("tumorMask")
        if isinstance(mask, h5py.Dataset) and tuple(mask.shape) != tuple(image.shape):
            raise MatFormatError(f"{path}: tumorMask shape {mask.shape} differs from image {image.shape}")
        mask_array = np.asarray(mask).T if isinstance(mask, h5py.Dataset) else None
        return CjData(np.asarray(image).T, MAT_LABELS[label], _decode_pid(cj["PID"]), mask_array)


def read_cvind(path: str | Path) -> np.ndarray:
    """The official 5-fold patient-wise index (values 1..5), one entry per slice."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "cvind" not in f:
                raise MatFormatError(f"{path}: no 'cvind' variable")
            return np.asarray(f["cvind"]).ravel().astype(int)
    except OSError as exc:
        raise MatFormatError(f"{path}: not a MATLAB v7.3 (HDF5) file") from exc


def mask_to_box(mask: np.ndarray | None) -> tuple[float, float, float, float] | None:
    """Tumour mask -> normalised (centre x, centre y, width, height), or None when empty."""
    if mask is None or not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    return ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
