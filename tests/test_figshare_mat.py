"""Fixtures written in the exact figshare layout (MATLAB v7.3 = HDF5, arrays transposed)."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from brain_tumor.data.figshare_mat import MatFormatError, read_cjdata, read_cvind
from brain_tumor.data.manifest import convert_figshare_mat, read_manifest
from tests.conftest import DATA, needs_data


def write_cjdata(path: Path, label: int, pid: str, image: np.ndarray) -> Path:
    mask = np.zeros_like(image, dtype=np.uint8)
    mask[10:20, 30:50] = 1  # rows 10..19, columns 30..49
    with h5py.File(path, "w") as f:
        g = f.create_group("cjdata")
        g["image"] = image.T.astype(np.int16)
        g["label"] = np.array([[float(label)]])
        g["PID"] = np.array([[ord(c)] for c in pid], dtype=np.uint16)
        g["tumorMask"] = mask.T
        g["tumorBorder"] = np.zeros((1, 8))
    return path


def test_read_cjdata_transposes_and_decodes(tmp_path: Path) -> None:
    image = np.arange(64 * 80, dtype=np.int16).reshape(64, 80)
    cj = read_cjdata(write_cjdata(tmp_path / "1.mat", 1, "MR040240B", image))
    assert cj.label == "meningioma" and cj.patient_id == "MR040240B"
    np.testing.assert_array_equal(cj.image, image)


def test_convert_folder_with_a_bad_file(tmp_path: Path) -> None:
    src = tmp_path / "mat"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, label in enumerate([1, 2, 3, 2], start=1):
        write_cjdata(src / f"{i}.mat", label, f"P{i % 2}", rng.integers(0, 900, (64, 64)).astype(np.int16))
    (src / "5.mat").write_bytes(b"not hdf5")
    with h5py.File(src / "cvind.mat", "w") as f:
        f["cvind"] = np.array([[1, 2, 3, 4, 5]], dtype=float)
    records = convert_figshare_mat(src, tmp_path / "out")
    assert [r.label for r in records] == ["meningioma", "glioma", "pituitary", "glioma"]
    assert [r.cv_fold for r in records] == [1, 2, 3, 4]
    back = read_manifest(tmp_path / "out")
    assert back == records
    assert back[0].box == pytest.approx((40 / 64, 15 / 64, 20 / 64, 10 / 64))


def test_mat_without_cjdata(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.mat", "w") as f:
        f["foo"] = np.zeros(2)
    with pytest.raises(MatFormatError, match="no 'cjdata'"):
        read_cjdata(tmp_path / "x.mat")


@needs_data
def test_real_cvind_matches_manifest() -> None:
    folds = read_cvind(DATA / "cvind.mat")
    with (DATA / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(folds) == 3064 and set(folds) == {1, 2, 3, 4, 5}
    assert all(folds[int(r["index"]) - 1] == int(r["cv_fold"]) for r in rows)
