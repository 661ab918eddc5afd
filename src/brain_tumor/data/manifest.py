"""Every data source becomes one manifest: path, label, patient id, fold and tumour box.

Sources: (a) a folder with ``manifest.csv`` (our format), (b) class-per-folder JPG/PNG trees,
(c) the official figshare ``.mat`` release, converted to PNGs by :func:`convert_figshare_mat`.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from brain_tumor.atomic import write_csv
from brain_tumor.data.figshare_mat import MatFormatError, mask_to_box, read_cjdata, read_cvind
from brain_tumor.data.imageio import IMAGE_SUFFIXES, to_unit_range

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "pituitary")
FIELDS = ("index", "label", "path", "patient_id", "cv_fold",
          "box_x_center", "box_y_center", "box_width", "box_height")


class DatasetLayoutError(ValueError):
    """A data folder in none of the known layouts; the message is one line."""


@dataclass(frozen=True)
class Record:
    """One slice. ``path`` is absolute; ``patient_id``/``cv_fold``/``box`` may be unknown.
    ``name`` is its path relative to the dataset root (POSIX): how results name a slice, so that
    they hold no machine's folders and match wherever the dataset lies."""

    index: int
    label: str
    path: str
    patient_id: str | None = None
    cv_fold: int | None = None
    box: tuple[float, float, float, float] | None = None
    name: str = ""

    @property
    def result_name(self) -> str:
        """``name``, or the path for records made without one."""
        return self.name or self.path


def canonical_label(name: str) -> str | None:
    """``Glioma_tumor``, ``glioma-tumour``, ``1-glioma`` ... -> ``glioma``; None if no class."""
    lowered = name.lower()
    matches = [c for c in CLASS_NAMES if c in lowered or (c == "pituitary" and "pituitar" in lowered)]
    return matches[0] if len(matches) == 1 else None


def _opt(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def read_manifest(root: str | Path) -> list[Record]:
    """Read ``root/manifest.csv`` (paths relative to ``root``)."""
    root = Path(root)
    path = root / "manifest.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"label", "path"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetLayoutError(f"{path}: missing columns {sorted(missing)}")
        records = []
        for i, row in enumerate(reader):
            label = canonical_label(row["label"])
            if label is None:
                raise DatasetLayoutError(f"{path}: row {i + 2}: unknown label {row['label']!r}")
            box_values = [_opt(row.get(k)) for k in FIELDS[5:]]
            box = tuple(float(v) for v in box_values) if all(box_values) else None  # type: ignore[arg-type]
            fold = _opt(row.get("cv_fold"))
            records.append(Record(
                index=int(row.get("index") or i + 1), label=label,
                path=str((root / row["path"]).resolve()),
                patient_id=_opt(row.get("patient_id")), cv_fold=int(fold) if fold else None,
                box=box,  # type: ignore[arg-type]
                name=Path(row["path"]).as_posix(),
            ))
    return records


def write_manifest(records: list[Record], root: str | Path) -> Path:
    """Atomically write ``root/manifest.csv`` with paths relative to ``root``."""
    root = Path(root)
    rows = []
    for r in records:
        box = r.box or ("", "", "", "")
        rel = os.path.relpath(r.path, root)
        rows.append([r.index, r.label, rel, r.patient_id or "", r.cv_fold or "", *box])
    return write_csv(root / "manifest.csv", FIELDS, rows)


def scan_class_folders(root: str | Path) -> list[Record]:
    """Records from a class-per-folder tree (``glioma/``, ``Glioma_tumor/`` ..., any depth).

    Folders named like no class (``no_tumor``) are skipped with a warning.
    """
    root = Path(root)
    records: list[Record] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = next((canonical_label(p) for p in reversed(path.relative_to(root).parts[:-1])
                      if canonical_label(p)), None)
        if label is None:
            continue
        records.append(Record(index=len(records) + 1, label=label, path=str(path.resolve()),
                              name=path.relative_to(root).as_posix()))
    if not records:
        raise DatasetLayoutError(
            f"{root}: no images in class folders (expected glioma/, meningioma/, pituitary/)")
    return records


def load_records(root: str | Path) -> list[Record]:
    """Detect the layout of ``root`` and return its records."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a folder")
    if (root / "manifest.csv").is_file():
        return read_manifest(root)
    if any(root.glob("*.mat")):
        raise DatasetLayoutError(
            f"{root}: figshare .mat files; convert them first: brain-tumor prepare {root} OUT_DIR")
    return scan_class_folders(root)


def convert_figshare_mat(src: str | Path, dst: str | Path) -> list[Record]:
    """Convert ``src/N.mat`` (+ ``cvind.mat``) into ``dst/<label>/N.png`` and ``dst/manifest.csv``.

    Bad files are reported and skipped; images are min-max scaled to 16-bit PNG.
    """
    src, dst = Path(src), Path(dst)
    files = sorted((p for p in src.rglob("*.mat") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise DatasetLayoutError(f"{src}: no figshare N.mat files")
    folds = read_cvind(src / "cvind.mat") if (src / "cvind.mat").is_file() else None
    records: list[Record] = []
    for path in tqdm(files, desc="converting .mat", unit="file"):
        try:
            cj = read_cjdata(path)
        except MatFormatError as exc:
            log.error("%s", exc)
            continue
        out = dst / cj.label / f"{path.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((to_unit_range(cj.image) * 65535).round().astype(np.uint16)).save(out)
        index = int(path.stem)
        fold = int(folds[index - 1]) if folds is not None and index <= len(folds) else None
        records.append(Record(index, cj.label, str(out.resolve()), cj.patient_id, fold,
                              mask_to_box(cj.tumor_mask), out.relative_to(dst).as_posix()))
    write_manifest(records, dst)
    return records
