"""The figshare downloader, against local files only."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from brain_tumor.data.download import download_figshare


def test_download_and_unpack(tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "part1.zip", "w") as z:
        z.writestr("brainTumorDataPublic_1766/1.mat", b"mat-1")
        z.writestr("../evil/2.mat", b"mat-2")
    (server / "cvind.mat").write_bytes(b"cv")
    listing = [{"name": n, "size": (server / n).stat().st_size, "download_url": (server / n).as_uri()}
               for n in ("part1.zip", "cvind.mat")]
    (server / "files.json").write_text(json.dumps(listing))
    dest = tmp_path / "dest"
    download_figshare(dest, api_url=(server / "files.json").as_uri())
    assert (dest / "1.mat").read_bytes() == b"mat-1" and (dest / "2.mat").read_bytes() == b"mat-2"
    assert (dest / "cvind.mat").read_bytes() == b"cv" and not (tmp_path / "evil").exists()
