import numpy as np

from brain_tumor.evaluation.errors import concentration, errors_by_patient

CLASSES = ["glioma", "meningioma", "pituitary"]


def _probs(predicted: list[int], confidence: list[float]) -> np.ndarray:
    out = np.full((len(predicted), 3), 0.0)
    for i, (k, c) in enumerate(zip(predicted, confidence, strict=True)):
        out[i] = (1 - c) / 2
        out[i, k] = c
    return out


def test_errors_are_counted_and_ranked_by_patient() -> None:
    y = np.array([1, 1, 1, 0, 0, 2, 2, 2])
    predicted = [2, 2, 1, 0, 1, 2, 2, 2]
    probs = _probs(predicted, [0.9, 0.6, 0.8, 0.9, 0.7, 0.9, 0.9, 0.9])
    groups = ["a", "a", "a", "b", "b", "c", "c", "c"]
    patients = errors_by_patient(y, probs, groups, CLASSES)
    assert [p.patient for p in patients] == ["a", "b", "c"]
    a = patients[0]
    assert (a.label, a.n_slices, a.n_wrong, a.wrong_as) == ("meningioma", 3, 2, {"pituitary": 2})
    assert a.wrong_indices == [0, 1]  # most confident first
    assert a.mean_confidence_wrong == np.float64(0.75).item()
    assert a.patient_answer == "pituitary"  # pooled probabilities follow the two wrong slices
    assert patients[2].n_wrong == 0 and patients[2].mean_confidence_wrong is None
    c = concentration(patients)
    assert c["n_wrong_slices"] == 3 and c["patients_with_an_error"] == 2
    assert c["patients_holding_half_the_errors"] == 1 and c["patients_holding_80pct_of_errors"] == 2
    assert c["patients_answered_wrongly"] == 1 and c["patients_mostly_wrong"] == 1


def test_no_errors() -> None:
    y = np.array([0, 1])
    patients = errors_by_patient(y, _probs([0, 1], [0.9, 0.9]), ["a", "b"], CLASSES)
    c = concentration(patients)
    assert c["n_wrong_slices"] == 0 and c["patients_holding_half_the_errors"] == 0
