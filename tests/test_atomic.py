import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from brain_tumor import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic.write_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_new_files_get_the_umask_mode_and_old_files_keep_theirs(tmp_path: Path) -> None:
    new = atomic.write_text(tmp_path / "new.md", "x")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~atomic._UMASK  # not mkstemp's 0600
    kept = tmp_path / "kept.md"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    atomic.write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"


def test_csv_writers_write_whole_tables_or_nothing(tmp_path: Path) -> None:
    import csv

    from brain_tumor.atomic import write_csv, write_dict_csv

    path = write_dict_csv(tmp_path / "rows.csv", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]

    def rows() -> Iterator[list[int]]:
        yield [3, 4]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_csv(path, ["a", "b"], rows())
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]  # the old table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]
