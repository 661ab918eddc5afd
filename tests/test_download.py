"""The downloader against local files and a loopback HTTP server: resume, refuse, retry, verify."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from brain_tumor.data.download import DownloadError, Expected, download_figshare, download_file
from tests.loopback import Served, serve


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 (the figshare/Keras published hashes are MD5)


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


def _blob(n: int = 300_000) -> bytes:
    return np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_resume_after_truncated_transfer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blob = _blob()
    served = Served(files={"/w.h5": blob}, faults={"/w.h5": ["truncate"]})
    with serve(served):
        dest = download_file(served.url("w.h5"), tmp_path / "w.h5", Expected(len(blob), md5(blob)))
    assert dest.read_bytes() == blob
    assert served.requests == [("/w.h5", None), ("/w.h5", f"bytes={len(blob) // 2}-")]  # resumed, not restarted
    assert "transfer failed" in caplog.text and sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]


def test_corrupted_download_is_refused_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blob = _blob()
    served = Served(files={"/w.h5": blob}, faults={"/w.h5": ["corrupt"]})
    with serve(served):
        dest = download_file(served.url("w.h5"), tmp_path / "w.h5", Expected(digest=md5(blob)))
    assert dest.read_bytes() == blob and [r for _, r in served.requests] == [None, None]
    assert "download refused: md5" in caplog.text


def test_hash_mismatch_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    served = Served(files={"/w.h5": _blob()})
    with serve(served), pytest.raises(DownloadError, match="no verified copy after 2 attempts.*md5"):
        download_file(served.url("w.h5"), tmp_path / "cache" / "w.h5", Expected(digest="0" * 32), attempts=2)
    assert list((tmp_path / "cache").iterdir()) == []  # neither w.h5 nor w.h5.part
    with serve(served), pytest.raises(DownloadError, match="HTTP 404"):
        download_file(served.url("nope.h5"), tmp_path / "cache" / "n.h5")
    assert len(served.requests) == 3  # a 404 is not retried


def test_truncated_every_time_keeps_the_part_for_later(tmp_path: Path) -> None:
    blob = _blob()
    served = Served(files={"/w.h5": blob}, faults={"/w.h5": ["truncate", "truncate"]})
    with serve(served), pytest.raises(DownloadError, match="after 2 attempts"):
        download_file(served.url("w.h5"), tmp_path / "w.h5", Expected(len(blob), md5(blob)), attempts=2)
    assert not (tmp_path / "w.h5").exists() and (tmp_path / "w.h5.part").is_file()
    with serve(served):  # a later run resumes from the kept part
        assert download_file(served.url("w.h5"), tmp_path / "w.h5", Expected(len(blob), md5(blob))).read_bytes() == blob
    assert served.requests[-1][1] == f"bytes={len(blob) // 2 + (len(blob) - len(blob) // 2) // 2}-"


def test_verified_file_is_not_fetched_again(tmp_path: Path) -> None:
    blob = _blob(1000)
    (tmp_path / "w.h5").write_bytes(blob)
    served = Served(files={"/w.h5": blob})
    with serve(served):
        download_file(served.url("w.h5"), tmp_path / "w.h5", Expected(len(blob), md5(blob)))
    assert served.requests == []


def test_figshare_release_over_http_is_verified(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("brainTumorDataPublic_1-766/1.mat", b"mat-1")
    files = {"/part1.zip": buffer.getvalue(), "/cvind.mat": b"cv"}
    served = Served(files=dict(files), faults={"/part1.zip": ["corrupt"]})
    with serve(served):
        listing = [{"name": n.lstrip("/"), "size": len(b), "computed_md5": md5(b), "download_url": served.url(n)}
                   for n, b in files.items()]
        served.files["/files.json"] = json.dumps(listing).encode()
        download_figshare(tmp_path / "raw", served.url("files.json"))
    raw = tmp_path / "raw"
    assert (raw / "1.mat").read_bytes() == b"mat-1" and (raw / "cvind.mat").read_bytes() == b"cv"
    assert not list((tmp_path / "raw").glob("*.part"))


def test_no_network_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot list the figshare release") as info:
        download_figshare(tmp_path, "http://127.0.0.1:9/files.json", timeout=5)
    assert "\n" not in str(info.value)
