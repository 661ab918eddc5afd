"""A model card in markdown, filled from measured results only."""

from __future__ import annotations

from typing import Any

PAPER_SPLIT = ("Evaluation here uses the paper's **slice-level random split**: slices of the same patient appear in "
               "training and test, so these figures are optimistic for new patients.")
CV_FOLD = ("Evaluation here is one fold of a **patient-wise cross-validation**: the test patients were never seen "
           "in training.")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


SHORTCUT_UNMEASURED = (
    "Not measured for this model. On this dataset a model can name the class of a slice whose tumour "
    "is erased, from the slice's plane, level and anatomy (Wallis & Buvat 2022; for the paper recipe, "
    "`results/shortcut/`): its accuracy is inflated by an unknown amount and it can name a tumour that "
    "is not there. Measure it with `brain-tumor shortcut-test` and put `shortcut.json` beside the model.")


def shortcut_section(entry: dict[str, Any] | None) -> str:
    """What the shortcut benchmark showed for this model: per eraser and class, the share of
    held-out slices still called their class and the share set aside (no tumour or referred)."""
    if entry is None:
        return SHORTCUT_UNMEASURED
    summary = entry["summary"]
    classes = [c for c in summary["clean"] if c != "all"]
    rows = []
    for method, per_class in summary.items():
        if method in ("clean", "tumour_on_blank", "tumour_on_tissue"):
            continue
        rows.append(f"| {method} | " + " | ".join(
            f"{_pct(per_class[c]['same'][0])} / {_pct(per_class[c].get('set_aside', per_class[c]['referred'])[0])}"
            for c in classes) + " |")
    clean = summary["clean"]
    return ("Held-out slices with the tumour erased, per class: share still called their class / share set aside "
            "(\"no tumour\" or referred). Unmodified slices: " +
            ", ".join(f"{c} {_pct(clean[c]['same'][0])}" for c in classes) + f". Referral: {entry.get('referral')}.\n\n"
            f"| eraser | {' | '.join(classes)} |\n|---|{'---|' * len(classes)}\n" + "\n".join(rows) +
            "\n\nWhere a class is still named with its tumour erased, the model answers from the slice's context "
            "rather than the tumour, and its accuracy on this dataset overstates what it sees.")


def model_card(name: str, metrics: dict[str, Any], trust: dict[str, Any], protocol: str | None = None,
               shortcut: dict[str, Any] | None = None) -> str:
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
512x512). {protocol or PAPER_SPLIT}
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

## Context shortcut
{shortcut_section(shortcut)}

## Known failure modes
- Most frequent confusions on test: {"; ".join(f"{t} -> {p} ({n})" for n, t, p in confusions)}.
- Inputs unlike the training slices (other sequences, non-brain images) still receive a class.
- The figures above hold for slices like the test slices; see the protocol under "Data".
"""
