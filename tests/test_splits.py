from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from brain_tumor.data.splits import Split, assert_disjoint, load_or_make_paper_split, paper_split

LABELS = ["glioma"] * 1426 + ["meningioma"] * 708 + ["pituitary"] * 930


def test_paper_split_counts_exactly() -> None:
    split = paper_split(LABELS, seed=1)
    test = Counter(LABELS[i] for i in split.test)
    train = Counter(LABELS[i] for i in split.train + split.val)
    assert test == {"glioma": 286, "meningioma": 142, "pituitary": 186}
    assert train == {"glioma": 1140, "meningioma": 566, "pituitary": 744}
    assert len(split.val) == round(0.1 * 1140) + round(0.1 * 566) + round(0.1 * 744)
    assert_disjoint(split)


def test_seeded_and_reused(tmp_path: Path) -> None:
    assert paper_split(LABELS, 3) == paper_split(LABELS, 3)
    assert paper_split(LABELS, 3).test != paper_split(LABELS, 4).test
    first = load_or_make_paper_split(tmp_path / "s.json", LABELS, 3, 0.1)
    assert (tmp_path / "s.json").is_file()
    assert load_or_make_paper_split(tmp_path / "s.json", LABELS, 3, 0.1) == first


def test_other_datasets_get_twenty_percent() -> None:
    labels = ["glioma"] * 50 + ["pituitary"] * 30
    split = paper_split(labels, 0)
    assert Counter(labels[i] for i in split.test) == {"glioma": 10, "pituitary": 6}


def test_disjointness_is_asserted() -> None:
    with pytest.raises(AssertionError, match="share slices"):
        assert_disjoint(Split("x", 0, [0, 1], [2], [1]))
    with pytest.raises(AssertionError, match="share 1 patients"):
        assert_disjoint(Split("x", 0, [0], [1], [2]), groups=["a", "b", "a"])


def _toy(n_patients: int = 40) -> tuple[list[str], list[str], list[int]]:
    labels, pids, folds = [], [], []
    for p in range(n_patients):
        pid = f"MR{p // 2:04d}" + ("B" if p % 2 else "")  # pairs MR0001 / MR0001B
        for _ in range(4):
            labels.append(["glioma", "meningioma", "pituitary"][p % 3])
            pids.append(pid)
            folds.append(p % 5 + 1)  # official folds split the pairs
    return labels, pids, folds


@pytest.mark.parametrize("grouping", ["official", "strict"])
def test_cv_folds_are_patient_disjoint(grouping: str) -> None:
    from brain_tumor.data.splits import cv_splits, strict_patient_id

    labels, pids, folds = _toy()
    splits = cv_splits(labels, pids, folds, grouping=grouping, val_fraction=0.2)
    assert len(splits) == 5
    assert sorted(i for s in splits for i in s.test) == list(range(len(labels)))
    key = strict_patient_id if grouping == "strict" else (lambda p: p)
    for s in splits:
        test_patients = {key(pids[i]) for i in s.test}
        assert not test_patients & {key(pids[i]) for i in s.train + s.val}
        assert s.val and not {key(pids[i]) for i in s.val} & {key(pids[i]) for i in s.train}


def test_official_folds_leak_across_strict_groups_but_strict_does_not() -> None:
    from brain_tumor.data.splits import cv_splits, strict_patient_id

    labels, pids, folds = _toy()
    official = cv_splits(labels, pids, folds, "official")[0]
    shared = {strict_patient_id(pids[i]) for i in official.test} & {strict_patient_id(pids[i]) for i in official.train}
    assert shared  # the toy's official folds separate MR0001 from MR0001B
    assert strict_patient_id("MR040240B") == "MR040240" and strict_patient_id("100360") == "100360"


def test_slice_grouping_mixes_patients() -> None:
    from brain_tumor.data.splits import cv_splits

    labels, pids, folds = _toy()
    s = cv_splits(labels, pids, folds, "slice")[0]
    assert {pids[i] for i in s.test} & {pids[i] for i in s.train}
