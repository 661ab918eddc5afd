"""Time from the start of training to a model with the paper's test accuracy, on this machine.

Trains one scenario on the paper's split (the saved ``results/paper-split/split.json``) with
the product's training command path, and after every epoch measures the test accuracy of the
current weights. The probe is measurement only: it chooses nothing (the checkpoint is still
chosen on validation loss) and its own time is excluded from the clock.

    python bench/time_to_accuracy.py --set train.precision=bf16-mixed \\
        --output results/experiments/paper-split-bf16/freeze-15 --work-dir runs/paper-split-bf16/freeze-15
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.config import RunConfig, apply_overrides  # noqa: E402
from brain_tumor.model import forward_fp32_stem  # noqa: E402
from brain_tumor.scenario import run_scenario  # noqa: E402
from brain_tumor.training.fit import prepare_data  # noqa: E402


class TestAccuracyProbe(L.Callback):
    """After each validation, the test accuracy of the current weights and the training clock."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, test: list[int], out: Path) -> None:
        self.images, self.labels, self.test, self.out = images[test], labels[test], test, out
        self.start, self.probe_seconds, self.rows = 0.0, 0.0, []  # type: ignore[var-annotated]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        begin = time.perf_counter()
        clock = begin - self.start - self.probe_seconds
        was_training = pl_module.training
        pl_module.eval()
        right = 0
        for i in range(0, len(self.images), 64):
            x = pl_module.normalize(self.images[i:i + 64]).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                right += int((forward_fp32_stem(pl_module.network, x).float().argmax(1)
                              == self.labels[i:i + 64]).sum())
        pl_module.train(was_training)
        self.rows.append({"epoch": trainer.current_epoch + 1, "training_seconds": clock,
                          "test_accuracy_current_weights": right / len(self.images)})
        self.probe_seconds += time.perf_counter() - begin
        self.out.write_text(json.dumps(self.rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="Config override, e.g. train.precision=bf16-mixed")
    parser.add_argument("--freeze", type=int, default=15)
    parser.add_argument("--target", type=float, default=0.9186, help="The paper's best test accuracy (freeze 15).")
    parser.add_argument("--split", type=Path, default=Path("results/paper-split/split.json"))
    parser.add_argument("--output", "--results-dir", dest="results_dir", type=Path, required=True,
                        help="Run folder for metrics and figures, as `brain-tumor train --output`.")
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    config = apply_overrides(RunConfig(), [f"model.freeze_layers={args.freeze}", *args.set]).validate()
    data = prepare_data(config, args.split)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    probe = TestAccuracyProbe(data.images, data.labels, data.split.test, args.results_dir / "test_probe.json")
    metrics = run_scenario(config, data, args.results_dir, args.work_dir, [probe], kind="benchmark")
    rows = probe.rows or json.loads((args.results_dir / "test_probe.json").read_text())
    reached = next((r for r in rows if r["test_accuracy_current_weights"] >= args.target), None)
    summary = {"target_test_accuracy": args.target, "reached": reached is not None,
               "seconds_to_target": reached["training_seconds"] if reached else None,
               "epoch_reached": reached["epoch"] if reached else None, "per_epoch": rows,
               "final_checkpoint_test_accuracy": metrics["accuracy"], "overrides": args.set,
               "probed_weights": "EMA average" if config.train.ema_decay else "current",
               "note": "clock: training + validation + data loading since fit start; probe time excluded; "
                       "with train.ema_decay the probe runs while the averaged weights are swapped in"}
    (args.results_dir / "time_to_accuracy.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "per_epoch"}, indent=2))


if __name__ == "__main__":
    main()
