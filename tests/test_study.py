"""One answer per patient or study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.answers import Prediction, failed
from brain_tumor.cli import app
from brain_tumor.study import aggregate, group_key
from tests.conftest import synthetic_slice


def answer(source: str, probs: list[float], refer: bool = False) -> Prediction:
    names = ["glioma", "meningioma", "pituitary"]
    k = int(np.argmax(probs))
    return Prediction(source, dict(zip(names, probs)), names[k], probs[k], refer, True)


def test_group_answer_is_the_mean_of_its_slices() -> None:
    preds = [answer("a/1.png", [0.6, 0.3, 0.1]), answer("a/2.png", [0.2, 0.7, 0.1]),
             answer("a/3.png", [0.7, 0.2, 0.1]), answer("b/1.png", [0.1, 0.1, 0.8]), failed("b/2.png", "bad")]
    groups = aggregate(preds, [group_key(p.source, "folder") for p in preds])
    assert [g.group for g in groups] == ["a", "b"]
    a, b = groups
    assert a.predicted == "glioma" and a.n_slices == 3
    assert a.confidence == pytest.approx(0.5) and a.probabilities["meningioma"] == pytest.approx(0.4)
    assert a.agreement == pytest.approx(2 / 3) and not a.refer
    assert b.n_slices == 1 and b.predicted == "pituitary"  # the failed file is left out


def test_group_is_referred_when_most_slices_are_or_when_they_disagree() -> None:
    preds = [answer("p/1.png", [0.5, 0.4, 0.1], refer=True), answer("p/2.png", [0.5, 0.4, 0.1], refer=True),
             answer("p/3.png", [0.9, 0.05, 0.05])]
    (g,) = aggregate(preds, ["p"] * 3)
    assert g.refer and "2 of 3 slices referred" in g.refer_reasons[0]
    split = [answer("q/1.png", [0.6, 0.4, 0.0]), answer("q/2.png", [0.0, 0.4, 0.6]),
             answer("q/3.png", [0.3, 0.4, 0.3])]
    (h,) = aggregate(split, ["q"] * 3)
    assert h.predicted == "meningioma" and h.agreement == pytest.approx(1 / 3)
    assert h.refer and "disagree" in h.refer_reasons[0]


def test_unknown_grouping_is_an_error() -> None:
    with pytest.raises(ValueError, match="group-by"):
        group_key("a/1.png", "patient-name")


def test_study_grouping_reads_the_dicom_study(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def write(path: Path, study: str) -> None:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.PatientID, ds.StudyInstanceUID = "P1", study
        ds.save_as(path, enforce_file_format=True)

    write(tmp_path / "x.dcm", "1.2.3")
    write(tmp_path / "y.dcm", "1.2.4")
    assert group_key(str(tmp_path / "x.dcm"), "study") == "P1/1.2.3"
    assert group_key(str(tmp_path / "y.dcm") + "#frame2", "study") == "P1/1.2.4"
    assert group_key(str(tmp_path / "z.png"), "study") == str(tmp_path)  # not DICOM: its folder


def test_predict_group_by_folder_writes_one_row_per_patient(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import csv

    rng = np.random.default_rng(0)
    for patient, n in (("patient-1", 3), ("patient-2", 2)):
        (tmp_path / "in" / patient).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic_slice(rng, i % 3, 64)).save(tmp_path / "in" / patient / f"{i}.png")
    out = tmp_path / "groups.csv"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-m", str(tiny_checkpoint),
                                      "--group-by", "folder", "--group-csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [(Path(r["group"]).name, r["n_slices"]) for r in rows] == [("patient-1", "3"), ("patient-2", "2")]
    assert "[folder]" in result.output
    bad = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-m", str(tiny_checkpoint), "--group-by", "x"])
    assert bad.exit_code == 2 and "group-by" in bad.output


def test_gated_slices_make_a_no_tumour_group_or_a_referred_one() -> None:
    from dataclasses import replace

    from brain_tumor.answers import NO_TUMOUR

    none = replace(answer("a/1.png", [0.8, 0.1, 0.1]), predicted=NO_TUMOUR, confidence=0.9)
    preds = [none, replace(none, source="a/2.png"), answer("a/3.png", [0.1, 0.8, 0.1]),
             answer("b/1.png", [0.1, 0.8, 0.1]), answer("b/2.png", [0.2, 0.7, 0.1]), replace(none, source="b/3.png")]
    a, b = aggregate(preds, [group_key(p.source, "folder") for p in preds])
    assert a.predicted == NO_TUMOUR and a.confidence == pytest.approx(2 / 3) and a.refer
    assert "1 of 3 slices show no tumour" not in a.refer_reasons and "2 of 3 slices show no tumour" in a.refer_reasons
    # the tumour class comes from the slices the gate let through, not from the gated one's 0.8 glioma
    assert b.predicted == "meningioma" and b.probabilities["glioma"] == pytest.approx(0.15) and b.refer
