"""Reproducible splits, written to disk and reused; patient-disjointness asserted in code."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from brain_tumor.atomic import write_json

# the paper's test set: 286 glioma, 142 meningioma, 186 pituitary (614 of 3064)
PAPER_TEST_COUNTS: dict[str, int] = {"glioma": 286, "meningioma": 142, "pituitary": 186}
PAPER_CLASS_SIZES: dict[str, int] = {"glioma": 1426, "meningioma": 708, "pituitary": 930}


@dataclass(frozen=True)
class Split:
    """Indices (positions in the manifest) of train, validation and test, plus how they were made."""

    name: str
    seed: int
    train: list[int]
    val: list[int]
    test: list[int]


def stratified_pick(labels: Sequence[str], pool: Sequence[int], counts: dict[str, int],
                    rng: np.random.Generator) -> list[int]:
    """Pick exactly ``counts[label]`` positions of each label from ``pool`` at random."""
    picked: list[int] = []
    for label, count in counts.items():
        candidates = [i for i in pool if labels[i] == label]
        if count > len(candidates):
            raise ValueError(f"need {count} {label} slices, only {len(candidates)} available")
        picked += rng.choice(candidates, size=count, replace=False).tolist()
    return sorted(picked)


def paper_split(labels: Sequence[str], seed: int, val_fraction: float = 0.1,
                test_counts: dict[str, int] | None = None) -> Split:
    """The paper's stratified random 80:20 split, then a stratified validation part of train.

    With the full dataset the test set is exactly 286/142/186; for other data the same
    20% share per class is used.
    """
    rng = np.random.default_rng(seed)
    everything = list(range(len(labels)))
    counts = Counter(labels)
    classes = sorted(counts)
    if test_counts is None:
        is_full_dataset = dict(counts) == PAPER_CLASS_SIZES
        test_counts = dict(PAPER_TEST_COUNTS) if is_full_dataset else {c: round(0.2 * counts[c]) for c in classes}
    test = stratified_pick(labels, everything, test_counts, rng)
    rest = sorted(set(everything) - set(test))
    val_counts = {c: round(val_fraction * sum(labels[i] == c for i in rest)) for c in classes}
    val = stratified_pick(labels, rest, val_counts, rng)
    train = sorted(set(rest) - set(val))
    return Split("paper", seed, train, val, test)


def assert_disjoint(split: Split, groups: Sequence[str | None] | None = None) -> None:
    """Fail unless train/val/test share no slice and, given ``groups``, no patient."""
    parts = {"train": split.train, "val": split.val, "test": split.test}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if set(parts[a]) & set(parts[b]):
                raise AssertionError(f"split {split.name}: {a} and {b} share slices")
            if groups is not None:
                shared = {groups[k] for k in parts[a]} & {groups[k] for k in parts[b]}
                if shared:
                    raise AssertionError(
                        f"split {split.name}: {a} and {b} share {len(shared)} patients")


def save_split(split: Split, path: str | Path) -> None:
    """Atomically write a split as JSON."""
    write_json(asdict(split), path, indent=None)


def indices_sha256(indices: Sequence[int]) -> str:
    """A fingerprint of a set of positions (order ignored): which slices a split held out."""
    return hashlib.sha256(json.dumps(sorted(indices)).encode()).hexdigest()


def load_split(path: str | Path, fold: int | None = None) -> Split:
    """Read a split written by :func:`save_split`, or fold ``fold`` (1-based) of a CV splits file."""
    payload = json.loads(Path(path).read_text())
    if isinstance(payload, list):
        if fold is None or not 1 <= fold <= len(payload):
            raise ValueError(f"{path} holds {len(payload)} CV folds: choose one with --fold 1..{len(payload)}")
        payload = payload[fold - 1]
    return Split(**payload)


def load_or_make_paper_split(path: str | Path, labels: Sequence[str], seed: int,
                             val_fraction: float) -> Split:
    """Reuse the split at ``path`` when it matches the data, else make and save it."""
    path = Path(path)
    if path.is_file():
        split = load_split(path)
        if split.seed == seed and max(split.train + split.val + split.test) < len(labels):
            assert_disjoint(split)
            return split
    split = paper_split(list(labels), seed, val_fraction)
    assert_disjoint(split)
    save_split(split, path)
    return split


GROUPINGS = ("official", "strict", "slice")


def strict_patient_id(patient_id: str) -> str:
    """``MR040240B`` -> ``MR040240``: IDs that differ only by a trailing letter are one person."""
    return re.sub(r"(?<=\d)[A-Za-z]+$", "", patient_id)


def _grouped_val(pool: list[int], labels: Sequence[str], groups: Sequence[str], fraction: float,
                 seed: int) -> list[int]:
    """A stratified, group-disjoint share of ``pool`` (about ``fraction``) for validation."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(splitter.split(pool, [labels[i] for i in pool], [groups[i] for i in pool]))
    return sorted(pool[i] for i in val)


def cv_splits(labels: Sequence[str], patient_ids: Sequence[str], official_folds: Sequence[int | None],
              grouping: str = "official", n_folds: int = 5, val_fraction: float = 0.1,
              seed: int = 42) -> list[Split]:
    """K-fold splits: ``official`` (the dataset's patient-wise cvind folds), ``strict`` (folds
    regrouped so IDs differing by a trailing letter stay together) or ``slice`` (random,
    slice-level: the leaky protocol, kept to measure the leak). Validation comes from the
    training folds, grouped like the folds. Patient-disjointness is asserted for patient-wise ones."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    n = len(labels)
    strict = [strict_patient_id(p) for p in patient_ids]
    if grouping == "official":
        if any(f is None for f in official_folds):
            raise ValueError("official grouping needs a cv_fold for every slice")
        fold_of = np.asarray(official_folds, dtype=int) - 1
        n_folds = int(fold_of.max()) + 1
        groups: Sequence[str] = patient_ids
    elif grouping == "strict":
        fold_of = np.empty(n, dtype=int)
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(n), labels, strict)):
            fold_of[test] = k
        groups = strict
    else:
        fold_of = np.empty(n, dtype=int)
        slice_splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(slice_splitter.split(np.zeros(n), labels)):
            fold_of[test] = k
        groups = [str(i) for i in range(n)]
    splits = []
    for k in range(n_folds):
        test = np.nonzero(fold_of == k)[0].tolist()
        rest = np.nonzero(fold_of != k)[0].tolist()
        val = _grouped_val(rest, labels, groups, val_fraction, seed + k)
        train = sorted(set(rest) - set(val))
        split = Split(f"{grouping}-fold{k + 1}", seed, train, val, test)
        assert_disjoint(split, groups if grouping != "slice" else None)
        splits.append(split)
    return splits
