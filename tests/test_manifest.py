from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from brain_tumor.data.manifest import DatasetLayoutError, canonical_label, load_records, scan_class_folders
from tests.conftest import DATA, needs_data


@pytest.mark.parametrize("name, label", [("glioma_tumor", "glioma"), ("Meningioma", "meningioma"),
                                         ("pituitary-tumour", "pituitary"), ("no_tumor", None),
                                         ("Pituitary Tumor", "pituitary"), ("misc", None)])
def test_canonical_label(name: str, label: str | None) -> None:
    assert canonical_label(name) == label


def test_class_folders_with_spelling_variants(class_folder_dataset: Path) -> None:
    (class_folder_dataset / "no_tumor").mkdir()
    (class_folder_dataset / "no_tumor" / "x.png").write_bytes(b"")
    records = load_records(class_folder_dataset)
    assert Counter(r.label for r in records) == {"glioma": 12, "meningioma": 12, "pituitary": 12}
    assert all(Path(r.path).is_absolute() for r in records)
    # results name a slice relative to the dataset root, whichever folder the dataset lies in
    assert all(Path(r.path) == (class_folder_dataset / r.name).resolve() for r in records)
    assert not any(Path(r.name).is_absolute() or str(class_folder_dataset) in r.result_name for r in records)


def test_wrong_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        load_records(tmp_path / "nope")
    with pytest.raises(DatasetLayoutError, match="no images in class folders"):
        scan_class_folders(tmp_path)
    (tmp_path / "1.mat").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="brain-tumor prepare"):
        load_records(tmp_path)


def test_manifest_with_unknown_label(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("label,path\nbanana,a.jpg\n")
    with pytest.raises(DatasetLayoutError, match="unknown label"):
        load_records(tmp_path)


@needs_data
def test_real_manifest() -> None:
    records = load_records(DATA)
    assert Counter(r.label for r in records) == {"glioma": 1426, "meningioma": 708, "pituitary": 930}
    assert len({r.patient_id for r in records}) == 233
    assert all(r.cv_fold in range(1, 6) and r.box is not None for r in records)
    assert all(r.name == f"{r.label}/{r.index}.jpg" for r in records)


def test_committed_results_name_no_machine_folder() -> None:
    """Prediction CSVs and configs under results/ are portable: no absolute paths."""
    import re

    results = Path(__file__).resolve().parents[1] / "results"
    absolute = re.compile(r"(^|[,\s\"'])(/(work|home|root|tmp|Users|mnt)/)", re.MULTILINE)
    offenders = [str(p.relative_to(results)) for p in results.rglob("*")
                 if p.suffix in (".csv", ".yaml", ".json") and absolute.search(p.read_text(errors="ignore"))]
    assert offenders == []
