"""A model card in markdown, filled from measured results only."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def model_card(name: str, metrics: dict[str, Any], trust: dict[str, Any]) -> str:
    """Intended use, data and its limits, metrics, calibration, abstention, localisation, failures."""
    c, loc = trust["calibration"], trust["localisation"]
    per_class = "\n".join(
        f"| {k} | {metrics['precision'][k]:.3f} | {metrics['recall'][k]:.3f} | {metrics['f1'][k]:.3f} | "
        f"{metrics['auc'][k]:.4f} | {_pct(loc['per_class'][k]['pointing_game'])} | "
        f"{_pct(loc['per_class'][k]['energy_in_box'])} |" for k in metrics["precision"])
    cm = metrics["confusion_matrix"]
    names = list(metrics["precision"])
    confusions = sorted(((cm[i][j], names[i], names[j]) for i in range(len(cm)) for j in range(len(cm))
                         if i != j), reverse=True)[:3]
    return f"""# Model card: {name}

## Intended use
Research on brain-tumour classification of single T1-weighted contrast-enhanced MRI slices into
glioma, meningioma or pituitary tumour. **Not for diagnosis**, not a medical device, and not for
slices without a tumour (there is no "no tumour" class: every input gets one of the three).

## Data and its limits
Figshare dataset of Cheng et al. (3064 slices, 233 patients, two hospitals in China, T1-CE only,
512x512). Evaluation here uses the paper's **slice-level random split**: slices of the same
patient appear in training and test, so these figures are optimistic for new patients.
Other scanners, sequences, framings and resolutions were not part of training.

## Metrics (test set, {metrics['n_test']} slices)
Accuracy {_pct(metrics['accuracy'])}, macro F1 {metrics['macro_f1']:.3f}, macro AUC {metrics['macro_auc']:.4f}.

| class | precision | recall | F1 | AUC | pointing game | CAM energy in box |
|---|---|---|---|---|---|---|
{per_class}

## Calibration
Temperature scaling fitted on the validation part (never on test): T = {c['temperature']:.3f}.
Test ECE {c['ece_before']:.4f} before, {c['ece_after']:.4f} after; NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}.

## Abstention
Cases with calibrated confidence below {c['refer_threshold']:.4f} are flagged `refer` (threshold
chosen on validation for a {_pct(c['target_risk'])} error rate among answered cases). On the test
set {_pct(c['test_referred_rate'])} are referred; error among answered {_pct(c['test_error_answered'])}
(all cases: {_pct(c['test_error_all'])}).

## Localisation (Grad-CAM, layer4)
On {loc['n_correct_with_box']} correctly classified test slices: the CAM maximum falls inside the
tumour box (±{loc['tolerance_px']} px at {metrics.get('image_size', 224)} px) in {_pct(loc['pointing_game'])}
of cases; {_pct(loc['energy_in_box'])} of CAM energy lies inside the box on average.

## Known failure modes
- Most frequent confusions on test: {"; ".join(f"{t} -> {p} ({n})" for n, t, p in confusions)}.
- Inputs unlike the training slices (other sequences, non-brain images) still receive a class.
- Slice-level split: accuracy for unseen patients is lower (see the patient-wise evaluation).
"""
