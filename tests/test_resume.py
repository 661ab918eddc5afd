"""A run killed with SIGKILL resumes from its last checkpoint and finishes like an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brain_tumor.evaluation.run_eval import read_history

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import lightning as L
    from brain_tumor.config import RunConfig, apply_overrides
    from brain_tumor.scenario import run_scenario
    from brain_tumor.training.fit import prepare_data

    root, out, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

    class Kill(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as with kill -9

    cfg = apply_overrides(RunConfig(), [
        f"data.root={root}", "data.image_size=32", "data.batch_size=4", f"data.cache_dir={out / 'cache'}",
        "data.augmentation=none", "model.weights=none", "train.max_epochs=3", "data.val_fraction=0.2",
        "train.accelerator=cpu", "train.early_stop_patience=10", "train.threads=1"])
    data = prepare_data(cfg, out / "split.json")
    run_scenario(cfg, data, out / "run", out / "work", [Kill()] if kill_at >= 0 else [])
""")


def run(root: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    home = {"BRAIN_TUMOR_HOME": str(out.parent / "home")}  # precision auto's cache: not the user's, one for all runs
    return subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(out), str(kill_at)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **home})


@pytest.mark.slow
def test_killed_run_resumes_and_writes_the_same_final_files(class_folder_dataset: Path, tmp_path: Path) -> None:
    whole = run(class_folder_dataset, tmp_path / "whole", -1)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = run(class_folder_dataset, tmp_path / "killed", 2)  # dies at the start of epoch 3 of 3
    assert killed.returncode == -9
    assert not (tmp_path / "killed" / "run" / "metrics.json").exists()
    resumed = run(class_folder_dataset, tmp_path / "killed", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = json.loads((tmp_path / "whole" / "run" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "run" / "metrics.json").read_text())
    assert a.keys() == b.keys() and a["epochs"] == b["epochs"] == 3 and a["n_test"] == b["n_test"]
    assert (tmp_path / "killed" / "run" / "test_predictions.csv").is_file()
    history_a = read_history(tmp_path / "whole" / "run" / "logs" / "metrics.csv")
    history_b = read_history(tmp_path / "killed" / "run" / "logs" / "metrics.csv")
    assert len(history_a["val_loss"]) == len(history_b["val_loss"]) == 3  # no epoch of the log lost
    # the epochs before the kill are the same epochs (same seed, same data): to float tolerance
    assert history_b["val_loss"][:2] == pytest.approx(history_a["val_loss"][:2], rel=1e-4)
    assert history_b["train_loss"][:2] == pytest.approx(history_a["train_loss"][:2], rel=1e-4)


def test_history_is_indexed_by_epoch_when_early_epochs_were_lost(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # only epochs 10 and 11 survive (an older version deleted the log on resume)
    (logs / "metrics.csv").write_text("epoch,step,val_acc,val_loss\n,670,,\n10,736,0.96,0.087\n11,803,0.97,0.077\n")
    history = read_history(logs / "metrics.csv")
    assert len(history["val_acc"]) == 12 and history["val_acc"][11] == pytest.approx(0.97)
    assert all(v != v for v in history["val_acc"][:10])  # NaN: lost, not shifted
