"""Temperature scaling, expected calibration error and abstention (risk-coverage), as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(1, keepdims=True)
    return probs


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (Guo et al. 2017), via LBFGS on log T."""
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


@dataclass(frozen=True)
class Reliability:
    """Per-bin confidence, accuracy and count of a reliability diagram."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Reliability:
    """Equal-width bins over top-1 confidence."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return Reliability(mean_conf, acc, count)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (log-loss), probabilities clipped at 1e-12."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: bin-weighted mean |accuracy - confidence| of the top-1 prediction."""
    r = reliability(probs, labels, n_bins)
    used = r.count > 0
    return float(np.sum(r.count[used] * np.abs(r.accuracy[used] - r.confidence[used])) / len(labels))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, coverage, risk)``: answering only when confidence >= threshold."""
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order].astype(float)
    n = np.arange(1, len(conf) + 1)
    return conf, n / len(conf), 1 - np.cumsum(ok) / n


def threshold_for_risk(confidence: np.ndarray, correct: np.ndarray, target_risk: float) -> float:
    """Lowest confidence threshold whose answered error rate stays <= ``target_risk``.

    Returns 1.0+ (refer everything) if no threshold reaches the target.
    """
    thresholds, _, risk = risk_coverage(confidence, correct)
    ok = np.nonzero(risk <= target_risk)[0]
    if len(ok) == 0:
        return float(np.nextafter(1.0, 2.0))
    return float(thresholds[ok[-1]])
