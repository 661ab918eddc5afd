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
