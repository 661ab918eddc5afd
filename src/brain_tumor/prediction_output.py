"""Where ``predict`` writes its answers: row by row, flushed, so an interruption or a failing file
never loses the rows already written; overlay names that never collide."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any


def prediction_fields(class_names: list[str], with_ood: bool, with_sets: bool = False,
                      with_gate: bool = False, with_evidence: bool = False) -> list[str]:
    """The CSV columns of a prediction row (see :meth:`brain_tumor.inference.Prediction.row`)."""
    fields = ["path", "predicted", "confidence", "refer", "calibrated", "error", "out_of_scope",
              *[f"p_{c}" for c in class_names]]
    fields += ["ood_score", "out_of_distribution"] if with_ood else []
    return fields + (["prediction_set"] if with_sets else []) + (["p_no_tumour"] if with_gate else []) + \
        (["tumour_evidence"] if with_evidence else []) + (["no_tumour_from"] if with_gate or with_evidence else [])


class PredictionSinks:
    """A CSV and/or a JSON array, opened before the first prediction (an unwritable path fails at
    once, not after an hour of work) and written one row at a time. ``close`` always leaves valid
    files, also after Ctrl-C."""

    def __init__(self, csv_path: Path | None, json_path: Path | None, fields: list[str]) -> None:
        self._files: list[IO[str]] = []
        self._csv: csv.DictWriter[str] | None = None
        self._json: IO[str] | None = None
        self._json_rows = 0
        self.count = 0
        try:
            if csv_path is not None:
                f = csv_path.open("w", newline="")
                self._files.append(f)
                self._csv = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
                self._csv.writeheader()
                f.flush()
            if json_path is not None:
                self._json = json_path.open("w")
                self._files.append(self._json)
                self._json.write("[")
        except OSError:
            self.close()
            raise

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow(row)
        if self._json is not None:
            self._json.write(("," if self._json_rows else "") + "\n  " + json.dumps(row))
            self._json_rows += 1
        for f in self._files:
            f.flush()
        self.count += 1

    def close(self) -> None:
        if self._json is not None and not self._json.closed:
            self._json.write("\n]\n")
        for f in self._files:
            f.close()


class OverlayNames:
    """``<stem>[_frameN]_gradcam.png``, with ``-2``, ``-3``... when two inputs share a name."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[str] = set()

    def for_source(self, source: str) -> Path:
        path, _, frame = source.partition("#frame")
        base = Path(path).stem + (f"_frame{frame}" if frame else "") + "_gradcam"
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}-{k}"
        self.used.add(name)
        return self.out_dir / f"{name}.png"
