"""Does an OOD threshold carry to new patients? Cross-fitting over patient-wise folds.

Each fold's model scores (kNN feature distance, :mod:`brain_tumor.evaluation.ood`) its own
validation slices, its test slices (patients it never saw) and images it must refuse. A threshold
set on validation slices (patients of the training folds) is what ``brain-tumor ood`` stores; the
out-of-fold threshold is the quantile of the *other* folds' test scores, so it is fitted on new
patients scored by other models of the same recipe, and judged on this fold's model and patients.
Pure functions of score arrays: no model, no IO.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brain_tumor.evaluation.ood import threshold_for_rate

IN_DISTRIBUTION = ("val", "test")  # every other key of a fold's scores is a kind of image to refuse


def cross_fit_threshold(scores: dict[int, dict[str, np.ndarray]], flag_rate: float) -> dict[str, Any]:
    """Per fold, the flag rates on its new patients and on must-refuse images under (a) the
    threshold set on its own validation slices and (b) the threshold set on the other folds' test
    scores; and the threshold fitted on every fold's test scores (the deployable one)."""
    if len(scores) < 2:
        raise ValueError("cross-fitting an OOD threshold needs the scores of at least 2 folds")
    folds = []
    for fold, own in sorted(scores.items()):
        others = np.concatenate([s["test"] for f, s in scores.items() if f != fold])
        refuse = np.concatenate([v for k, v in own.items() if k not in IN_DISTRIBUTION] or [np.zeros(0)])
        row: dict[str, Any] = {"fold": fold, "n_test": int(len(own["test"])), "n_refuse": int(len(refuse))}
        for name, threshold in (("val", threshold_for_rate(own["val"], flag_rate)),
                                ("oof", threshold_for_rate(others, flag_rate))):
            row[name] = {"threshold": threshold, "test_flagged": float((own["test"] > threshold).mean()),
                         "refuse_flagged": float((refuse > threshold).mean()) if len(refuse) else None}
        folds.append(row)
    pooled = np.concatenate([s["test"] for s in scores.values()])
    summary = {name: {"mean_abs_error": float(np.mean([abs(r[name]["test_flagged"] - flag_rate) for r in folds])),
                      "test_flagged_min": min(r[name]["test_flagged"] for r in folds),
                      "test_flagged_max": max(r[name]["test_flagged"] for r in folds),
                      "test_flagged_pooled": float(np.sum([r[name]["test_flagged"] * r["n_test"] for r in folds])
                                                   / np.sum([r["n_test"] for r in folds]))}
               for name in ("val", "oof")}
    return {"flag_rate": flag_rate, "folds": folds, "summary": summary,
            "threshold": threshold_for_rate(pooled, flag_rate), "n_out_of_fold": int(len(pooled))}


def transfer_markdown(result: dict[str, Any], k: int) -> str:
    """The per-fold table: validation-set threshold against the out-of-fold one."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    rate = result["flag_rate"]
    lines = [f"## Out-of-distribution threshold (kNN cosine distance, k = {k}; target: {rate:.0%} of new patients' "
             "slices flagged)", "",
             "Per fold: its model's threshold set on its own validation slices (what `brain-tumor ood` stores) "
             "against one set on the other folds' test slices (new patients, other models of this recipe), "
             "each judged on this fold's test patients and on images it must refuse (photos, blanks, noise, "
             "X-ray-like).", "",
             "| fold | test slices | val threshold | flagged (new patients) | must-refuse flagged "
             "| out-of-fold threshold | flagged (new patients) | must-refuse flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["folds"]:
        v, o = r["val"], r["oof"]
        lines.append(f"| {r['fold']} | {r['n_test']} | {v['threshold']:.4f} | {pct(v['test_flagged'])} | "
                     f"{pct(v['refuse_flagged'])} | {o['threshold']:.4f} | {pct(o['test_flagged'])} | "
                     f"{pct(o['refuse_flagged'])} |")
    s = result["summary"]
    lines += ["", f"Flagged among new patients, pooled (per-fold range; mean distance from the {rate:.0%} target): "
              f"validation threshold {pct(s['val']['test_flagged_pooled'])} ({pct(s['val']['test_flagged_min'])} to "
              f"{pct(s['val']['test_flagged_max'])}; {100 * s['val']['mean_abs_error']:.1f} points), out-of-fold "
              f"threshold {pct(s['oof']['test_flagged_pooled'])} ({pct(s['oof']['test_flagged_min'])} to "
              f"{pct(s['oof']['test_flagged_max'])}; {100 * s['oof']['mean_abs_error']:.1f} points). "
              f"Deployable threshold (all {result['n_out_of_fold']} out-of-fold slices): {result['threshold']:.4f}."]
    return "\n".join(lines) + "\n"
