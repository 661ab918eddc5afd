"""Write the ``run.json`` that run folders finished before the record existed lack (a one-off
migration, kept for provenance; run from the repository root).

    python scripts/backfill_run_records.py results            # write them
    python scripts/backfill_run_records.py results --dry-run  # list what would be written

A folder is a run when it holds ``metrics.json`` and ``config.yaml``. Its kind comes from the split
file beside it: a CV's ``splits.json`` (a list of folds) makes it a CV fold, whose number is the
folder's (``fold-K``, the layout ``brain-tumor cv`` writes), checked against the fold's test size;
a paper split's ``split.json`` (beside it, or the reproduction's, ``--paper-split``, when the
run's config names the paper split with that file's seed) makes it a paper-split scenario.
Ensemble folds (an ``ensemble.json`` beside them) are not runs: their record is the ensemble's.
The record is built by the same
:func:`brain_tumor.run_record.run_record` as a new run's, from the run's config, metrics, environment
and split, with ``finished`` unknown (null) and ``backfilled`` saying so; the checkpoint's hash is
null, as these checkpoints were not kept with the results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from brain_tumor.atomic import write_json
from brain_tumor.config import from_dict, read_run_config
from brain_tumor.cv_report import with_defaults
from brain_tumor.data.splits import load_split
from brain_tumor.run_record import read_run_record, run_record

NOTE = ("written afterwards by scripts/backfill_run_records.py from config.yaml, metrics.json, environment.json "
        "and the split file; the finishing time is unknown and the checkpoint was not kept")


def _json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def kind_and_split(run_dir: Path, n_test: int, config: dict[str, Any],
                   paper_split: Path) -> tuple[str, int | None, Path] | None:
    """``(kind, fold, split file)`` of a run folder, or None where it is not a run this script knows.
    A paper-split run without a split.json beside it used ``paper_split`` when its config says the
    paper split with that file's seed (the split is made from ``data.seed``)."""
    parent = run_dir.parent
    if (parent / "ensemble.json").is_file():
        return None
    if (parent / "splits.json").is_file():
        fold = int(run_dir.name.removeprefix("fold-")) if run_dir.name.startswith("fold-") else None
        if fold is None:
            return None
        if len(load_split(parent / "splits.json", fold).test) != n_test:
            raise ValueError(f"{run_dir}: {n_test} test slices, but fold {fold} of its splits.json has another count")
        return "cv fold", fold, parent / "splits.json"
    if (parent / "split.json").is_file():
        return "paper-split scenario", None, parent / "split.json"
    data = config.get("data") or {}
    if data.get("split") == "paper" and paper_split.is_file() and _json(paper_split).get("seed") == data.get("seed"):
        if len(load_split(paper_split).test) != n_test:
            raise ValueError(f"{run_dir}: {n_test} test slices, but {paper_split} has another count")
        return "paper-split scenario", None, paper_split
    return None


def backfilled_record(run_dir: Path, paper_split: Path) -> dict[str, Any] | None:
    """The ``run.json`` a finished run folder without one should carry; None where it is not a run."""
    metrics = _json(run_dir / "metrics.json")
    if not metrics or not (run_dir / "config.yaml").is_file():
        return None
    raw = with_defaults(read_run_config(run_dir))
    found = kind_and_split(run_dir, int(metrics.get("n_test", -1)), raw, paper_split)
    if found is None:
        return None
    kind, fold, split_file = found
    split = load_split(split_file, fold)
    config = from_dict(raw)
    environment = _json(run_dir / "environment.json")
    parts = {"train": split.train, "val": split.val, "test": split.test}
    record = run_record(config, kind, split.name, parts, run_dir / "model.pt", metrics, environment, fold=fold)
    return {**record, "finished": None, "backfilled": {"note": NOTE, "split_file": split_file.as_posix()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="Folder to walk (e.g. results).")
    parser.add_argument("--paper-split", type=Path, default=Path("results/paper-split/split.json"),
                        help="The paper split the reproduction saved (for paper-split runs without one beside them).")
    parser.add_argument("--dry-run", action="store_true", help="List the folders, write nothing.")
    args = parser.parse_args(argv)
    written = 0
    for metrics_file in sorted(args.root.rglob("metrics.json")):
        run_dir = metrics_file.parent
        if read_run_record(run_dir) is not None:
            continue
        record = backfilled_record(run_dir, args.paper_split)
        if record is None:
            continue
        print(f"{run_dir}: {record['kind']}" + (f", fold {record['data']['fold']}" if record["data"]["fold"] else ""))
        if not args.dry_run:
            write_json(record, run_dir / "run.json")
        written += 1
    print(f"{written} run record(s) {'to write' if args.dry_run else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
