"""``reproduce``: fresh run folders unless --resume, and the check against committed reference runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.config import RunConfig, portable, to_dict
from brain_tumor.reference_check import check_against_reference, check_line, find_reference_runs
from tests.conftest import tiny_run_settings

runner = CliRunner()


def _run_folder(root: Path, name: str, accuracy: float, **changes: dict[str, object]) -> Path:
    config = portable(to_dict(RunConfig()))
    for section, values in changes.items():
        config[section].update(values)
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "n_test": 600}))
    return folder


def test_reference_runs_are_found_by_recipe_not_by_folder_name(tmp_path: Path) -> None:
    _run_folder(tmp_path, "a/freeze-15", 0.98, model={"freeze_layers": 15})
    _run_folder(tmp_path, "b-seed43/anything", 0.97, model={"freeze_layers": 15}, train={"seed": 43})
    _run_folder(tmp_path, "c/freeze-15", 0.99, model={"freeze_layers": 15}, train={"precision": "fp32"})
    _run_folder(tmp_path, "d/freeze-15", 0.50, model={"freeze_layers": 15}, train={"max_epochs": 3})  # other recipe
    _run_folder(tmp_path, "e/freeze-15", 0.50, model={"freeze_layers": 15}, data={"seed": 7})  # other split
    _run_folder(tmp_path, "f/freeze-30", 0.50)  # other scenario
    ours = portable(to_dict(RunConfig()))
    ours["model"]["freeze_layers"] = 15
    found = find_reference_runs(tmp_path, ours)
    assert sorted(Path(r["run"]).parent.name for r in found) == ["a", "b-seed43", "c"]
    assert {r["seed"] for r in found} == {42, 43}


def test_verdict_against_the_seed_spread() -> None:
    refs = [{"accuracy": a} for a in (0.975, 0.985)]
    within = check_against_reference(0.98, 614, refs)
    assert within["verdict"] == "within" and within["seed_spread"] == pytest.approx(0.01)
    assert within["difference"] == pytest.approx(0.0) and 0.005 < within["binomial_se"] < 0.007
    outside = check_against_reference(0.93, 614, refs)
    assert outside["verdict"] == "outside" and outside["difference"] == pytest.approx(-0.05)
    assert "outside the spread" in check_line("freeze 15", outside)
    assert check_against_reference(0.9, 614, [])["verdict"] == "no reference"


@pytest.mark.slow
def test_reproduce_trains_fresh_refuses_to_overwrite_and_resumes(class_folder_dataset: Path, tmp_path: Path) -> None:
    results, work, reference = tmp_path / "report", tmp_path / "runs", tmp_path / "reference"
    args = ["reproduce", "--results-dir", str(results), "--work-dir", str(work), "--scenario", "15",
            "--reference", str(reference), "--no-trust", *tiny_run_settings(class_folder_dataset, tmp_path / "cache")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "no committed reference run" in first.output
    metrics = json.loads((results / "freeze-15" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and (work / "freeze-15" / "model.pt").is_file()

    again = runner.invoke(app, args)  # the same folders again: refused in one line, nothing touched
    assert again.exit_code == 2 and "--resume" in again.output
    assert json.loads((results / "freeze-15" / "metrics.json").read_text()) == metrics

    shutil.copytree(results / "freeze-15", reference / "paper-split" / "freeze-15")  # a committed reference
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    check = json.loads((results / "reference_check.json").read_text())["scenarios"]["freeze-15"]
    assert check["verdict"] == "within" and check["difference"] == pytest.approx(0.0)
    assert "Against the committed reference runs" in (results / "comparison.md").read_text()
