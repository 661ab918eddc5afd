"""The model card says what the shortcut benchmark measured for this very model, or that it was not measured."""

from __future__ import annotations

import json
from pathlib import Path

from brain_tumor.evaluation.model_card import SHORTCUT_UNMEASURED, shortcut_section
from brain_tumor.model_loading import model_sha256, shortcut_for


def entry(same: float, aside: float) -> dict:
    cell = {"same": [same, same, same], "set_aside": [aside, aside, aside], "referred": [aside, aside, aside]}
    per_class = {c: dict(cell) for c in ("glioma", "meningioma", "pituitary", "all")}
    clean = {c: {"same": [0.93, 0.9, 0.96]} for c in ("glioma", "meningioma", "pituitary", "all")}
    return {"referral": "confidence threshold in the checkpoint", "summary": {
        "clean": clean, "box_fill": per_class, "inpaint": per_class, "tumour_on_blank": per_class}}


def test_section_reports_each_eraser_and_class() -> None:
    text = shortcut_section(entry(0.973, 0.02))
    assert "| box_fill | 97.3% / 2.0% | 97.3% / 2.0% | 97.3% / 2.0% |" in text
    assert "| inpaint |" in text and "tumour_on_blank" not in text  # isolation is not erasing
    assert "glioma 93.0%" in text
    assert shortcut_section(None) == SHORTCUT_UNMEASURED


def test_entry_is_found_beside_the_model_by_its_hash(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    other = entry(0.5, 0.5)
    mine = {**entry(0.1, 0.9), "model_sha256": model_sha256(model)}
    assert shortcut_for(model) is None  # nothing beside it
    (tmp_path / "shortcut.json").write_text(json.dumps({"models": {"other": {**other, "model_sha256": "0" * 64}}}))
    assert shortcut_for(model) is None  # measured on another model
    (tmp_path / "shortcut.json").write_text(json.dumps({"models": {"other": other, "this": mine}}))
    found = shortcut_for(model)
    assert found is not None and found["name"] == "this"
    (tmp_path / "shortcut.json").write_text("{not json")
    assert shortcut_for(model) is None


def test_default_card_says_whether_the_package_carries_its_gate() -> None:
    from brain_tumor.export import default_model_card

    meta = {"architecture": "resnet50-v1", "class_names": ["glioma", "meningioma", "pituitary"], "config": {}}
    without, with_gate = default_model_card(meta), default_model_card(meta, gate=True)
    assert 'no "no tumour" answer' in without and "carries its" not in without
    assert "carries its" in with_gate and 'no "no tumour" answer' not in with_gate
