from __future__ import annotations

from pathlib import Path

import torch

from brain_tumor.data.cache import cached_images
from brain_tumor.data.manifest import load_records


def test_decoded_once_and_bad_files_skipped(class_folder_dataset: Path, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    (class_folder_dataset / "pituitary" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    records = load_records(class_folder_dataset)
    images, kept = cached_images(records, 32, tmp_path / "cache")
    assert images.shape == (36, 1, 32, 32) and images.dtype == torch.uint8
    assert len(kept) == 36 and all("broken" not in records[i].path for i in kept)
    assert "broken.png" in caplog.text
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 1
    again, kept_again = cached_images(records, 32, tmp_path / "cache")  # read back, not decoded
    assert torch.equal(again, images) and kept_again == kept
