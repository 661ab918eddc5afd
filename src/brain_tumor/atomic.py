"""Atomic file writing, in one place: a file is written whole under a temporary name in its own
folder and renamed over the target, so a reader (or a resumed run) never sees half of it, and
an interrupted write leaves the old file, or none, never a torn one."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on leaving the block without an error it replaces
    ``path``, on an error it is removed. ``suffix`` matters to writers that pick a format from
    the name (``.png``, ``.npz``, ``.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; give the file what a plain write would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The permission bits the file keeps (if it exists) or a new file would get under the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    """The process's umask: from /proc on Linux, else by setting it and putting it straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(data: Any, path: str | Path, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV (``header``, then ``rows``) to ``path`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def write_dict_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows of dicts as a CSV, atomically: the columns are every key, in the order first
    seen; a row without a column gets an empty cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return write_csv(path, columns, ([row.get(c, "") for c in columns] for row in rows))
