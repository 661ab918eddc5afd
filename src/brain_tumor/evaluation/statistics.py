"""Statistics as pure functions: patient-level results, patient bootstrap CIs, McNemar's test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import binomtest


def patient_level(y_true: np.ndarray, probs: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One row per patient: the majority true label and the mean of its slices' probabilities."""
    groups_arr = np.asarray(groups)
    labels, rows = [], []
    for g in dict.fromkeys(groups_arr.tolist()):
        sel = groups_arr == g
        labels.append(np.bincount(y_true[sel]).argmax())
        rows.append(probs[sel].mean(0))
    return np.asarray(labels), np.asarray(rows)


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray, probs: np.ndarray,
                 groups: Sequence[str], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(point, low, high)``: percentile CI resampling *patients* (all their slices together)."""
    groups_arr = np.asarray(groups)
    unique = np.unique(groups_arr)
    index = {g: np.nonzero(groups_arr == g)[0] for g in unique}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        picked = np.concatenate([index[g] for g in rng.choice(unique, size=len(unique), replace=True)])
        try:
            values.append(metric(y_true[picked], probs[picked]))
        except ValueError:  # e.g. a class missing from the resample for AUC
            continue
    alpha = (1 - level) / 2
    low, high = np.nanquantile(values, [alpha, 1 - alpha])
    return float(metric(y_true, probs)), float(low), float(high)


def paired_bootstrap_difference(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray,
                                probs_a: np.ndarray, probs_b: np.ndarray, groups: Sequence[str],
                                n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(point, low, high)`` of ``metric(a) - metric(b)`` on the same slices, resampling patients
    (both models see the same resample, so the CI is of the paired difference)."""
    return repeated_bootstrap_difference(metric, y_true, [probs_a], [probs_b], groups, n_boot, seed)


def repeated_bootstrap_difference(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray,
                                  probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                                  groups: Sequence[str], n_boot: int = 2000,
                                  seed: int = 0) -> tuple[float, float, float]:
    """``(point, low, high)`` of the mean over repeats (training seeds) of ``metric(a_r) - metric(b_r)``,
    all on the same slices. Each bootstrap draw resamples patients once for every repeat, so the CI
    holds the test set's sampling error while the mean over repeats damps the training noise."""
    if not probs_a or len(probs_a) != len(probs_b):
        raise ValueError("need the same, non-zero number of runs on each side")
    k = probs_a[0].shape[1]
    stacked = np.concatenate([q for pair in zip(probs_a, probs_b) for q in pair], axis=1)

    def mean_difference(y: np.ndarray, both: np.ndarray) -> float:
        cols = [both[:, i * k:(i + 1) * k] for i in range(both.shape[1] // k)]
        return float(np.mean([metric(y, a) - metric(y, b) for a, b in zip(cols[::2], cols[1::2])]))

    return bootstrap_ci(mean_difference, y_true, stacked, groups, n_boot, seed)


def bootstrap_mean(values: np.ndarray, groups: Sequence[str], n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-slice ``values`` (e.g. accuracy lost under a shift), CI
    resampling patients."""
    column = np.asarray(values, dtype=float)[:, None]
    return bootstrap_ci(lambda _, v: float(v.mean()), np.zeros(len(column), dtype=int), column, groups,
                        n_boot, seed)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired correctness: discordant counts and two-sided p-value."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "p_value": p}


def paired_fold_test(scores_a: list[float], scores_b: list[float]) -> float:
    """Two-sided paired t-test p-value over per-fold scores of two recipes on the same folds."""
    from scipy.stats import ttest_rel

    if np.allclose(scores_a, scores_b):
        return 1.0
    return float(ttest_rel(scores_a, scores_b).pvalue)


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((p.argmax(1) == y).mean())


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in ``p``'s columns."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, p.argmax(1), labels=list(range(p.shape[1])), average="macro", zero_division=0))


def class_recall(k: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """Recall of class ``k``."""
    def recall(y: np.ndarray, p: np.ndarray) -> float:
        sel = y == k
        return float((p[sel].argmax(1) == k).mean()) if sel.any() else float("nan")
    return recall


def macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro one-vs-rest AUC."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1]))))
