"""evaluate --data: any labelled collection, with no-tumour images followed one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.evaluation.external import CollectionError, collection_label, read_collection
from tests.conftest import synthetic_slice


def test_label_synonyms() -> None:
    assert [collection_label(x) for x in ("glioma_tumor", "Meningioma_tumor", "pituitary_tumor", "no_tumor",
                                          "notumor", "Normal", "NO-TUMOUR")] == [
        "glioma", "meningioma", "pituitary", "no_tumour", "no_tumour", "no_tumour", "no_tumour"]
    assert collection_label("lymphoma") is None


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for k, folder in enumerate(["glioma_tumor", "meningioma_tumor", "pituitary_tumor", "no_tumor"]):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(synthetic_slice(rng, min(k, 2), 64)).save(root / folder / f"{i}.png")
    return root


def test_collections_from_folders_csv_and_unknown_labels(tmp_path: Path) -> None:
    items = read_collection(_tree(tmp_path / "tree"))
    assert len(items) == 12 and sum(i.label == "no_tumour" for i in items) == 3
    (tmp_path / "list.csv").write_text("path,label\ntree/no_tumor/0.png,normal\ntree/glioma_tumor/0.png,glioma\n")
    assert [i.label for i in read_collection(tmp_path / "list.csv")] == ["no_tumour", "glioma"]
    (tmp_path / "bad.csv").write_text("path,label\na.png,lymphoma\nb.png,cyst\n")
    with pytest.raises(CollectionError, match=r"unknown labels \['cyst', 'lymphoma'\]"):
        read_collection(tmp_path / "bad.csv")
    (tmp_path / "tree" / "lymphoma").mkdir()
    Image.fromarray(synthetic_slice(np.random.default_rng(1), 0, 64)).save(tmp_path / "tree" / "lymphoma" / "x.png")
    with pytest.raises(CollectionError, match="lymphoma"):
        read_collection(tmp_path / "tree")


def test_evaluate_data_writes_metrics_outcomes_and_figures(tiny_checkpoint: Path, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    (root / "glioma_tumor" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_checkpoint), "--data", str(root),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 13 and metrics["n_unreadable"] == 1 and metrics["tumour"]["n"] == 9
    healthy = metrics["no_tumour"]
    assert healthy["n"] == 3 and healthy["refused"] + healthy["called_a_tumour"] == pytest.approx(1.0)
    outcomes = (out / "outcomes.csv").read_text()
    assert "unreadable" in outcomes and ("called a tumour" in outcomes or "refused" in outcomes)
    assert (out / "risk_coverage.png").is_file() and (out / "summary.md").is_file()
    bad = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_checkpoint), "--data", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no such file or folder" in bad.output
