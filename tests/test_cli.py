"""The CLI end to end on a tiny synthetic dataset (CPU, 32 px, one epoch)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.inference import Predictor
from brain_tumor.training.checkpoint import load_model_checkpoint
from tests.conftest import tiny_run_settings

runner = CliRunner()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.slow
def test_train_then_evaluate(class_folder_dataset: Path, tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "runs"
    args = ["train", "--results-dir", str(results), "--work-dir", str(work),
            *tiny_run_settings(class_folder_dataset, tmp_path / "cache", epochs=2)]
    progress = Lines()  # on the logger itself: the CLI's logging.basicConfig(force=True) resets root's handlers
    logging.getLogger("brain_tumor.training").addHandler(progress)
    try:
        result = runner.invoke(app, args)
    finally:
        logging.getLogger("brain_tumor.training").removeHandler(progress)
    assert result.exit_code == 0, result.output
    epochs = progress.lines
    assert len(epochs) == 2 and epochs[1].startswith("epoch 2/2: ") and "val_acc" in epochs[1]  # progress in logs
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["n_test"] == 3 * round(0.2 * 12) and metrics["frozen_parameters"] == 171_328
    assert set(metrics["recall"]) == {"glioma", "meningioma", "pituitary"}
    assert (results / "figures" / "confusion_matrix.png").is_file()
    record = json.loads((results / "run.json").read_text())
    assert record["kind"] == "train" and record["recipe"]["image_size"] == 32
    assert record["data"]["n_test"] == metrics["n_test"]
    assert record["checkpoint"]["file"] == "model.pt" and len(record["checkpoint"]["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(record)  # relative names only
    names = [line.split(",")[0] for line in (results / "test_predictions.csv").read_text().splitlines()[1:]]
    assert len(names) == metrics["n_test"]  # slices named relative to the dataset root, not by this machine's path
    assert all(not Path(n).is_absolute() and (class_folder_dataset / n).is_file() for n in names)
    network, meta = load_model_checkpoint(work / "model.pt")
    assert meta["class_names"] == ["glioma", "meningioma", "pituitary"] and meta["architecture"] == "resnet50-v1"
    assert meta["config"]["model"]["freeze_layers"] == 30
    payload = torch.load(work / "model.pt", weights_only=True)  # safe loading works
    assert payload["preprocessing"]["image_size"] == 32

    evaluated = runner.invoke(app, ["evaluate", "-m", str(work / "model.pt"), "--split", str(results / "split.json"),
                                    "--output", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--set", f"data.root={tmp_path / 'missing'}"])
    assert result.exit_code == 2 and "not a folder" in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 2 and "no figshare N.mat files" in result.output
    result = runner.invoke(app, ["train", "--set", "train.lr=-1"])
    assert result.exit_code == 2 and "train.lr" in result.output


def test_predict_reports_bad_files_and_exit_code(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from tests.test_imageio import bad_files

    bad = bad_files(tmp_path)
    result = runner.invoke(app, ["predict", str(tmp_path / "good.jpg"), str(bad["truncated"]), str(bad["text"]),
                                 "--checkpoint", str(tiny_checkpoint), "--csv", str(tmp_path / "p.csv"),
                                 "--no-scope-check",  # good.jpg is a gradient, not an MRI slice (see test_scope)
                                 "--cam-dir", str(tmp_path / "cams")])
    assert result.exit_code == 1
    assert "1 predicted, 0 refused as out of scope, 2 failed" in result.output
    assert (tmp_path / "p.csv").read_text().count("\n") == 4
    assert (tmp_path / "cams" / "good_gradcam.png").is_file()
    ok = runner.invoke(app, ["predict", str(tmp_path / "good.jpg"), "--checkpoint", str(tiny_checkpoint),
                             "--no-scope-check"])
    assert ok.exit_code == 0
    missing = runner.invoke(app, ["predict", "x.png", "--checkpoint", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt: no such checkpoint" in missing.output


@pytest.mark.slow
def test_cv_resumes_and_summarises(class_folder_dataset: Path, tmp_path: Path) -> None:
    results, work = tmp_path / "cv", tmp_path / "runs"
    args = ["cv", "--grouping", "slice", "--results-dir", str(results), "--work-dir", str(work),
            "--fold", "1", "--fold", "2", *tiny_run_settings(class_folder_dataset, tmp_path / "cache")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((results / "summary.json").read_text())
    assert summary["folds"] == 2 and len(summary["fold_accuracy"]) == 2
    splits = json.loads((results / "splits.json").read_text())
    assert sum(summary["pooled"]["support"].values()) == len(splits[0]["test"]) + len(splits[1]["test"])
    ci = summary["bootstrap_95ci_by_patient"]["accuracy"]
    assert ci["low"] <= ci["value"] <= ci["high"]
    assert json.loads((results / "fold-2" / "run.json").read_text())["kind"] == "cv fold"
    mtime = (results / "fold-1" / "metrics.json").stat().st_mtime
    assert runner.invoke(app, args).exit_code == 0  # resumed: finished folds are not retrained
    assert (results / "fold-1" / "metrics.json").stat().st_mtime == mtime
    compared = runner.invoke(app, ["compare", str(results / "fold-1"), str(results / "fold-1")])
    assert compared.exit_code == 0 and '"p_value": 1.0' in compared.output
    seeds = runner.invoke(app, ["compare", str(results), str(results), "--also-a", str(results),
                                "--also-b", str(results)])
    assert seeds.exit_code == 0, seeds.output
    repeated = json.loads(seeds.output)
    assert repeated["repeats"] == 2 and len(repeated["pairs"]) == 2
    assert repeated["mean_accuracy_difference_95ci_by_patient"]["value"] == 0.0
    unpaired = runner.invoke(app, ["compare", str(results), str(results), "--also-a", str(results)])
    assert unpaired.exit_code == 2 and "as many --also-a as --also-b" in unpaired.output


@pytest.mark.slow
def test_robust_recipe_trains_then_shift_test_and_ood(class_folder_dataset: Path, tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "runs"
    settings = [f"data.root={class_folder_dataset}", "data.image_size=32", "data.batch_size=8",
                f"data.cache_dir={tmp_path / 'cache'}", "model.weights=none", "train.max_epochs=1",
                "data.val_fraction=0.2", "data.preprocessing=robust", "data.augmentation=robust"]
    args = ["train", "--results-dir", str(results), "--work-dir", str(work)]
    for s in settings:
        args += ["--set", s]
    assert runner.invoke(app, args).exit_code == 0
    checkpoint = work / "model.pt"
    _, meta = load_model_checkpoint(checkpoint)
    assert meta["preprocessing"]["pipeline"] == "robust"
    split = results / "split.json"
    out = tmp_path / "shift"
    result = runner.invoke(app, ["shift-test", "-m", f"robust={checkpoint}", "-m", f"again={checkpoint}",
                                 "--split", str(split), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "shift.json").read_text())
    shift = report["models"]["robust"]
    assert set(shift["shifts"]) >= {"gamma", "framing", "jpeg", "bit_depth"}
    low, high = report["statistics"]["drop"]["robust"]["gamma"][1:]
    assert low <= shift["mean_drop"]["gamma"] + 1e-9 <= high + 2e-9
    assert report["statistics"]["drop_vs_robust"]["again"]["gamma"] == [0.0, 0.0, 0.0]  # same model: no difference
    rows = (out / "shift_predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + report["n_test"] and "again/rotation/45deg" in rows[0]
    assert (out / "shift.png").is_file() and (out / "preprocessing_steps.png").is_file()
    before = checkpoint.read_bytes()
    result = runner.invoke(app, ["ood", "--checkpoint", str(checkpoint), "--split", str(split),
                                 "--output", str(tmp_path / "ood")])
    assert result.exit_code == 0, result.output
    assert checkpoint.read_bytes() == before  # the detector goes beside the checkpoint, never into it
    assert "ood" not in torch.load(checkpoint, weights_only=True)
    assert Predictor.from_checkpoint(checkpoint).ood is not None  # and is found there
    names = [r.split(",")[0] for r in rows[1:]]
    assert not any(Path(n).is_absolute() for n in names)  # slices named relative to the dataset root
    bad = runner.invoke(app, ["shift-test", "-m", "x=/no/such.pt", "--split", str(split)])
    assert bad.exit_code != 0 and "NAME=MODEL" in bad.output


@pytest.mark.slow
def test_ema_weights_are_validated_and_exported(class_folder_dataset: Path, tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "runs"
    args = ["train", "--results-dir", str(results), "--work-dir", str(work)]
    for s in [f"data.root={class_folder_dataset}", "data.image_size=32", "data.batch_size=8",
              f"data.cache_dir={tmp_path / 'cache'}", "model.weights=none", "train.max_epochs=2",
              "data.val_fraction=0.2", "train.ema_decay=0.5", "train.early_stop_patience=5"]:
        args += ["--set", s]
    assert runner.invoke(app, args).exit_code == 0
    last = torch.load(work / "last.ckpt", map_location="cpu", weights_only=False)
    averaged, current = last["state_dict"], last["current_model_state"]
    name = "network.fc.weight"
    assert not torch.equal(averaged[name], current[name])  # the average is not the last step's weights
    best = torch.load(work / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    network, _ = load_model_checkpoint(work / "model.pt")
    assert torch.equal(network.state_dict()["fc.weight"], best[name])
    bad = runner.invoke(app, ["train", "--set", "train.ema_decay=1.5"])
    assert bad.exit_code == 2 and "train.ema_decay" in bad.output


def _slices(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    from tests.conftest import synthetic_slice

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(synthetic_slice(rng, i % 3, 64)).save(folder / f"{i}.png")


def test_predict_output_is_checked_first_and_survives_ctrl_c(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv
    import json

    from brain_tumor.inference import Predictor

    _slices(tmp_path / "in", 5)
    unwritable = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-m", str(tiny_checkpoint),
                                          "--csv", str(tmp_path / "no-such-dir" / "p.csv")])
    assert unwritable.exit_code == 2 and "cannot write predictions" in unwritable.output
    assert "Traceback" not in unwritable.output

    calls = {"n": 0}
    predict_batch = Predictor.predict_batch

    def interrupt_second_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return predict_batch(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_batch", interrupt_second_batch)
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "p.json"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-m", str(tiny_checkpoint), "--batch-size", "2",
                                      "--csv", str(out_csv), "--json", str(out_json)])
    assert result.exit_code == 130 and "interrupted: 2 rows kept" in result.output
    assert len(list(csv.DictReader(out_csv.open()))) == 2
    assert len(json.loads(out_json.read_text())) == 2  # still valid JSON


def test_predict_overlays_never_collide_and_skips_are_reported(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from tests.test_imageio import _dicom

    _slices(tmp_path / "in" / "a", 1)
    _slices(tmp_path / "in" / "b", 1, seed=1)  # a/0.png and b/0.png share a stem
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    import pydicom

    dcm = _dicom(tmp_path / "in" / "multi.dcm", np.zeros((16, 16), np.uint16))
    ds = pydicom.dcmread(dcm)
    frames = np.stack([np.arange(256, dtype=np.uint16).reshape(16, 16) * (k + 1) for k in range(2)])
    ds.NumberOfFrames, ds.PixelData = 2, frames.tobytes()
    ds.save_as(dcm)
    cams = tmp_path / "cams"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-m", str(tiny_checkpoint),
                                      "--cam-dir", str(cams), "--no-scope-check"])  # the frames are ramps
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in cams.iterdir()) == [
        "0_gradcam-2.png", "0_gradcam.png", "multi_frame0_gradcam.png", "multi_frame1_gradcam.png"]
    assert "skipped:" in result.output and "notes.txt" in result.output
    assert "4 predicted, 0 refused as out of scope, 0 failed, 1 skipped" in result.output


def test_report_takes_its_folder_as_an_argument_or_by_its_old_name(tmp_path: Path) -> None:
    for args in ([str(tmp_path / "new")], ["--results-dir", str(tmp_path / "old")]):
        Path(args[-1]).mkdir()
        result = runner.invoke(app, ["report", *args])
        assert result.exit_code == 0, result.output
        assert (Path(args[-1]) / "report.html").is_file() and (Path(args[-1]) / "comparison.md").is_file()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere: no such results folder" in missing.output
    assert not (tmp_path / "nowhere").exists()
    twice = runner.invoke(app, ["report", str(tmp_path / "new"), "--results-dir", str(tmp_path / "old")])
    assert twice.exit_code == 2 and len(twice.output.strip().splitlines()) == 1


def test_evaluate_scores_one_fold_of_a_cv_splits_file(tiny_checkpoint: Path, class_folder_dataset: Path,
                                                     tmp_path: Path) -> None:
    import dataclasses

    from brain_tumor.data.splits import Split

    folds = [Split(f"official-fold{k}", 0, [i for i in range(36) if i % 3 != k - 1], [],
                   [i for i in range(36) if i % 3 == k - 1][: 4 + k]) for k in (1, 2)]
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([dataclasses.asdict(f) for f in folds]))
    common = ["evaluate", "-m", str(tiny_checkpoint), "--split", str(splits), "--data", str(class_folder_dataset)]
    scored = runner.invoke(app, [*common, "--fold", "2", "-o", str(tmp_path / "fold-2")])
    assert scored.exit_code == 0, scored.output
    assert sum(json.loads((tmp_path / "fold-2" / "metrics.json").read_text())["support"].values()) == 6  # fold 2's
    no_fold = runner.invoke(app, common)
    assert no_fold.exit_code == 2 and "--fold 1..2" in no_fold.output and len(no_fold.output.strip().splitlines()) == 1
    stray = runner.invoke(app, ["evaluate", "-m", str(tiny_checkpoint), "--fold", "1"])
    assert stray.exit_code == 2 and "with --split" in stray.output


def test_evaluate_data_is_the_dataset_with_split_and_a_collection_alone(
        tiny_checkpoint: Path, class_folder_dataset: Path, tmp_path: Path) -> None:
    from brain_tumor.data.splits import Split, save_split

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["config"]["data"]["root"] = str(tmp_path / "moved")  # trained on data that is no longer there
    torch.save(payload, tmp_path / "model.pt")
    model, split = tmp_path / "model.pt", tmp_path / "split.json"
    test = list(range(0, 36, 4))
    save_split(Split("paper", 0, [i for i in range(36) if i % 4], [], test), split)

    scored = runner.invoke(app, ["evaluate", "-m", str(model), "--split", str(split),
                                 "--data", str(class_folder_dataset), "--output", str(tmp_path / "split")])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert "support" in metrics and "n_images" not in metrics, metrics  # scored as a split, not a collection
    assert sum(metrics["support"].values()) == len(test)  # its test part
    moved = runner.invoke(app, ["evaluate", "-m", str(model), "--split", str(split)])
    assert moved.exit_code == 2 and len(moved.output.strip().splitlines()) == 1
    assert "moved" in moved.output and "or point --data at a copy" in moved.output
    model_alone = runner.invoke(app, ["evaluate", "-m", str(model), "--split", str(split), "--data",
                                      str(class_folder_dataset), "--tta", "flip"])
    assert model_alone.exit_code == 2 and "apply with --data alone" in model_alone.output

    collection = runner.invoke(app, ["evaluate", "-m", str(model), "--data", str(class_folder_dataset),
                                     "-o", str(tmp_path / "collection"), "--no-scope-check"])
    assert collection.exit_code == 0, collection.output
    assert json.loads((tmp_path / "collection" / "metrics.json").read_text())["n_images"] == 36  # every image
