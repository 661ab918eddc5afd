"""``brain-tumor calibrate``: fit and judge calibration, referral, conformal sets and (with the
fold models) the out-of-distribution threshold on the out-of-fold predictions of a patient-wise
CV, and write the deployable ``calibration.json``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.atomic import write_text
from brain_tumor.comparison import patients_by_path, read_predictions
from brain_tumor.config import read_run_config, recipe_fingerprint
from brain_tumor.cv_report import fold_number
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation import calibration as cal
from brain_tumor.evaluation.ood_transfer import cross_fit_threshold, transfer_markdown
from brain_tumor.evaluation.oof_calibration import OutOfFold, cross_fit, cross_fit_summary, deployable
from brain_tumor.evaluation.plots import plot_reliability, plot_risk_coverage
from brain_tumor.evaluation.run_eval import write_json

log = logging.getLogger(__name__)
SCORES_FORMAT = 1  # bump when the cached OOD scores change meaning


class CalibrationInputError(ValueError):
    """A CV folder that cannot be calibrated on; the message is one line."""


def _tail(path: str) -> str:
    """``class/file.jpg``: how a slice is named independently of where the dataset lies."""
    return "/".join(Path(path).parts[-2:])


def read_out_of_fold(cv_dir: Path) -> tuple[OutOfFold, int]:
    """Pooled OOF predictions of a CV results folder (``fold-*/test_predictions.csv``) with each
    slice's patient, and the image size the CV ran at."""
    fold_dirs = sorted(p.parent for p in cv_dir.glob("fold-*/test_predictions.csv"))
    if len(fold_dirs) < 2:
        raise CalibrationInputError(f"{cv_dir}: needs the test_predictions.csv of at least 2 CV folds, "
                                    f"found {len(fold_dirs)}")
    if not (cv_dir / "config.yaml").is_file():
        raise CalibrationInputError(f"{cv_dir}: no config.yaml (is it a `brain-tumor cv` results folder?)")
    patient_of = {_tail(path): patient for path, patient in patients_by_path(cv_dir).items()}
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    folds: list[np.ndarray] = []
    patients: list[str] = []
    for number, fold_dir in enumerate(fold_dirs, start=1):
        paths, y, p = read_predictions([fold_dir])
        missing = [path for path in paths if _tail(path) not in patient_of]
        if missing:
            raise CalibrationInputError(f"{fold_dir}: {len(missing)} slices not in the dataset's manifest "
                                        f"(first: {missing[0]})")
        probs.append(p)
        labels.append(y)
        folds.append(np.full(len(y), number))
        patients.extend(patient_of[_tail(path)] for path in paths)
    patients_arr = np.asarray(patients)
    fold_arr = np.concatenate(folds)
    shared = {p for p in set(patients) if len(set(fold_arr[patients_arr == p])) > 1}
    if shared:
        raise CalibrationInputError(f"{cv_dir}: folds share patients ({sorted(shared)[:3]}...): not patient-wise")
    config = _config(cv_dir)
    size = int(config.get("data", {}).get("image_size", 224))
    return OutOfFold(np.concatenate(probs), np.concatenate(labels), fold_arr, patients_arr), size


def _config(cv_dir: Path) -> dict[str, Any]:
    return read_run_config(cv_dir)


def fold_checkpoint(fold_dir: Path, work_dir: Path) -> Path:
    """The checkpoint that made a CV fold's predictions: ``work_dir/fold-N/`` named by the fold's
    ``run.json``, and checked against the SHA-256 recorded there."""
    from brain_tumor.onnx_runtime import file_sha256

    try:
        recorded = json.loads((fold_dir / "run.json").read_text())["checkpoint"]
        name, sha256 = str(recorded["file"]), str(recorded["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationInputError(f"{fold_dir}: no run.json naming its checkpoint and its SHA-256 ({exc}); "
                                    "CVs run before run.json existed cannot be checked against their models") from exc
    checkpoint = work_dir / fold_dir.name / name
    if not checkpoint.is_file():
        raise CalibrationInputError(f"{checkpoint}: missing (--work-dir is the folder `brain-tumor cv` wrote the "
                                    "fold models to)")
    if file_sha256(checkpoint) != sha256:
        raise CalibrationInputError(f"{checkpoint}: not the model that made {fold_dir.name}'s predictions "
                                    "(its SHA-256 differs from run.json's)")
    return checkpoint


def out_of_fold_ood_scores(cv_dir: Path, work_dir: Path, output: Path,
                           k: int) -> tuple[dict[int, dict[str, np.ndarray]], int]:
    """kNN OOD scores of each fold's model (bank: its training slices) on its validation and test
    slices and on the refuse set, and the median bank size; each fold's are kept under
    ``output/ood_scores/`` for its model's hash, its split and ``k``, so an interrupted run
    continues where it stopped."""
    from brain_tumor.data.splits import load_split
    from brain_tumor.inference import Predictor
    from brain_tumor.onnx_runtime import file_sha256
    from brain_tumor.robustness import ood_scores
    from brain_tumor.training.checkpoint import load_checkpoint
    from brain_tumor.training.fit import load_data

    scores: dict[int, dict[str, np.ndarray]] = {}
    bank_sizes: list[int] = []
    images = None
    for fold_dir in sorted(p.parent for p in cv_dir.glob("fold-*/test_predictions.csv")):
        checkpoint = fold_checkpoint(fold_dir, work_dir)
        split = load_split(cv_dir / "splits.json", fold_number(fold_dir))
        key = {"format": SCORES_FORMAT, "model_sha256": file_sha256(checkpoint), "k": k,
               "split_sha256": hashlib.sha256(json.dumps([split.train, split.val, split.test]).encode()).hexdigest()}
        cache = output / "ood_scores" / f"{fold_dir.name}.json"
        cached = _read_cache(cache)
        if {n: cached.get(n) for n in key} != key:
            model = load_checkpoint(checkpoint)
            if images is None:
                data = (model.config or {}).get("data", {})
                _, images, _ = load_data(str(data["root"]), model.preprocessing.image_size, data.get("cache_dir"),
                                         model.preprocessing.pipeline)
            log.info("%s: OOD scores of its validation, test and must-refuse images", fold_dir.name)
            bank, fold_scores = ood_scores(Predictor.from_checkpoint(checkpoint), images, split.train,
                                           {"val": split.val, "test": split.test}, k)
            cached = {**key, "bank_size": len(bank),
                      "scores": {name: s["knn"].tolist() for name, s in fold_scores.items()}}
            write_json(cached, cache)
        scores[fold_number(fold_dir)] = {name: np.asarray(v) for name, v in cached["scores"].items()}
        bank_sizes.append(int(cached["bank_size"]))
    return scores, int(np.median(bank_sizes))


def _read_cache(path: Path) -> dict[str, Any]:
    """A fold's cached scores, or {} where absent or unreadable (then they are computed again)."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) and isinstance(cached.get("scores"), dict) else {}


def run_calibrate(cv_dir: Path, output: Path, confidence: float = 0.95, target_risk: float = 0.02,
                  class_conditional: bool = True, n_boot: int = 2000, work_dir: Path | None = None,
                  flag_rate: float = 0.05, k: int = 10) -> dict[str, Any]:
    """Cross-fitted judgement (``calibration_cv.json``, figures) and the deployable
    ``calibration.json`` fitted on every OOF slice, both under ``output``. With ``work_dir`` (the
    fold models), also the OOD threshold, fitted on the out-of-fold scores of new patients."""
    oof, image_size = read_out_of_fold(cv_dir)
    config = _config(cv_dir)
    n_folds = len(np.unique(oof.folds))
    log.info("%d out-of-fold slices of %d patients in %d folds", len(oof.labels), len(set(oof.patients)), n_folds)
    result = cross_fit(oof, target_risk, confidence, class_conditional)
    summary = cross_fit_summary(oof, result, list(CLASS_NAMES), confidence, target_risk, n_boot)
    summary.update({"cv": _relative(cv_dir), "class_conditional": class_conditional, "n_folds": n_folds})
    output.mkdir(parents=True, exist_ok=True)
    ood = None
    if work_dir is not None:
        fold_scores, bank_size = out_of_fold_ood_scores(cv_dir, work_dir, output, k)
        ood = {**cross_fit_threshold(fold_scores, flag_rate), "method": "knn-cosine", "k": k, "bank_size": bank_size}
        summary["ood"] = ood
    write_json(summary, output / "calibration_cv.json")
    write_text(output / "calibration_cv.md",
               summary_markdown(summary) + ("\n" + transfer_markdown(ood, k) if ood else ""))
    _figures(oof, result.scaled, result.answered, summary, output)
    calibration = deployable(oof, list(CLASS_NAMES), image_size, target_risk, confidence, _relative(cv_dir),
                             class_conditional)
    calibration["recipe"] = recipe_fingerprint(config)  # a model of another recipe is refused
    if ood is not None:  # kNN distances shrink as a bank grows: the bank size says which models it fits
        calibration["ood"] = {"method": "knn-cosine", "k": k, "threshold": ood["threshold"], "flag_rate": flag_rate,
                              "bank_size": ood["bank_size"],
                              "fitted_on": {"source": _relative(cv_dir), "n_slices": ood["n_out_of_fold"]}}
    write_json(calibration, output / "calibration.json")
    return summary


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def _figures(oof: OutOfFold, scaled: np.ndarray, answered: np.ndarray, summary: dict[str, Any],
             output: Path) -> None:
    def bins(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = cal.reliability(probs, oof.labels)
        return r.confidence, r.accuracy, r.count

    plot_reliability(bins(oof.probs), bins(scaled), summary["ece_before"]["value"], summary["ece_after"]["value"],
                     output / "reliability.png")
    correct = scaled.argmax(1) == oof.labels
    _, share, risk = cal.risk_coverage(scaled.max(1), correct)
    chosen = (float(answered.mean()), float(1 - correct[answered].mean()) if answered.any() else 0.0)
    plot_risk_coverage(share, risk, chosen, output / "risk_coverage.png", summary["referral"]["target_risk"])


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short table of the cross-fitted figures."""
    def ci(d: dict[str, float], pct: bool = False) -> str:
        def f(v: float) -> str:
            return f"{100 * v:.2f}%" if pct else f"{v:.4f}"

        return f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]"

    c, r = summary["conformal"], summary["referral"]
    lines = [f"# Calibration on out-of-fold predictions: `{summary['cv']}`", "",
             f"{summary['n_slices']} slices of {summary['n_patients']} patients, {summary['n_folds']} folds; "
             f"{summary['protocol']}. 95% CIs resample patients.", "",
             "| figure | value |", "|---|---|",
             f"| ECE before temperature scaling | {ci(summary['ece_before'])} |",
             f"| ECE after | {ci(summary['ece_after'])} |",
             f"| ECE per fold, mean before / after (folds made worse) | {summary['ece_per_fold']['mean_before']:.4f} / "
             f"{summary['ece_per_fold']['mean_after']:.4f} ({summary['ece_per_fold']['worse_after']} of "
             f"{summary['n_folds']}) |",
             f"| NLL before / after | {summary['nll_before']:.4f} / {summary['nll_after']:.4f} |",
             f"| accuracy (all slices) | {100 * summary['accuracy']:.2f}% |",
             f"| answered at the referral threshold (target error {r['target_risk']:.0%}) "
             f"| {ci(r['answered'], True)} |",
             f"| accuracy among answered | {_pct(r['accuracy_answered'])} |",
             f"| conformal set coverage (stated {c['confidence']:.0%}) | {ci(c['coverage'], True)} |",
             f"| set coverage per fold, lowest / highest | {100 * summary['coverage_per_fold']['min']:.2f}% / "
             f"{100 * summary['coverage_per_fold']['max']:.2f}% |",
             f"| mean set size | {c['mean_set_size']:.3f} |",
             f"| sets of size 0 / 1 / 2 / 3 | {' / '.join(f'{100 * v:.1f}%' for v in c['set_size_shares'].values())} |",
             "", "| class | slices | set coverage | mean set size |", "|---|---|---|---|"]
    lines += [f"| {name} | {d['n']} | {100 * d['coverage']:.2f}% | {d['mean_set_size']:.3f} |"
              for name, d in c["per_class"].items()]
    lines += ["", "| fold | slices | T | ECE before | ECE after | answered | acc. answered | set coverage | set size |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {f['fold']} | {f['n']} | {f['temperature']:.3f} | {f['ece_before']:.4f} | {f['ece_after']:.4f} | "
              f"{100 * f['answered']:.1f}% | {_pct(f['accuracy_answered'])} | {100 * f['set_coverage']:.2f}% | "
              f"{f['mean_set_size']:.3f} |" for f in summary["folds"]]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
