"""Downloads that resume, verify and never leave a half-written file under its final name.

:func:`download_file` writes ``<dest>.part`` (resumed with an HTTP ``Range`` request), checks its
size and hash, and only then renames it to ``dest``. A short or corrupted transfer is refused in
one log line and retried a bounded number of times; a hash that never matches is an error.
:func:`download_figshare` fetches the official figshare release (article 1512427) that way.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
FIGSHARE_API = "https://api.figshare.com/v2/articles/1512427/files"
CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that could not be completed and verified; the message is one line."""


@dataclass(frozen=True)
class Expected:
    """What a finished download must be: its size and/or hash (hex digest of ``algorithm``)."""

    size: int | None = None
    digest: str | None = None
    algorithm: str = "md5"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, expected: Expected) -> str | None:
    """``None`` when ``path`` matches ``expected``, else why not (one line)."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"{size} bytes, expected {expected.size}"
    if expected.digest is not None:
        got = file_digest(path, expected.algorithm)
        if got != expected.digest.lower():
            return f"{expected.algorithm} {got}, expected {expected.digest.lower()}"
    return None


def _transfer(url: str, part: Path, timeout: float, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size), or rewrite it when the server
    ignores the range. Raises ``OSError`` (``URLError``, ``IncompleteRead`` ...) when cut off."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https/file by design)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after offset: the part file may already be whole
            return
        raise
    with response:
        resumed = offset > 0 and getattr(response, "status", 200) == 206
        length = int(response.headers.get("Content-Length") or 0)
        total = (offset if resumed else 0) + length
        with part.open("ab" if resumed else "wb") as out, tqdm(
                total=total or None, initial=offset if resumed else 0, unit="B", unit_scale=True, desc=desc,
                leave=False) as bar:
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if length and received < length:
            raise http.client.IncompleteRead(b"", length - received)


def download_file(url: str, dest: str | Path, expected: Expected | None = None, attempts: int = 3,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; verified, then renamed atomically.

    A ``dest`` that already matches ``expected`` is kept. An interrupted transfer resumes from the
    part file; a finished one that fails the check is discarded and fetched again, up to
    ``attempts`` times in all. Raises :class:`DownloadError` (one line) when that never succeeds.
    """
    dest = Path(dest)
    expected = expected or Expected()
    if dest.is_file():
        problem = check_file(dest, expected)
        if problem is None:
            return dest
        log.warning("%s: %s; fetching it again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    problem = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout, dest.name)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500 and exc.code != 429:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            problem = f"transfer failed ({_reason(exc)})"
            log.warning("%s: %s; attempt %d/%d", dest.name, problem, attempt, attempts)
            continue
        problem = check_file(part, expected) or ""
        if not problem:
            os.replace(part, dest)
            return dest
        log.warning("%s: download refused: %s; attempt %d/%d", dest.name, problem, attempt, attempts)
        if expected.size is None or part.stat().st_size >= expected.size:
            part.unlink()  # whole but wrong: start again; shorter than expected: resume
    raise DownloadError(f"{url}: no verified copy after {attempts} attempts (last: {problem})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"{exc.expected} bytes missing"
    return str(exc) or type(exc).__name__


def _list_figshare(api_url: str, timeout: float) -> list[dict[str, object]]:
    try:
        with urllib.request.urlopen(api_url, timeout=timeout) as response:  # noqa: S310
            files = json.loads(response.read())
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{api_url}: cannot list the figshare release ({_reason(exc)})") from None
    except json.JSONDecodeError:
        raise DownloadError(f"{api_url}: the figshare file list is not JSON") from None
    if not isinstance(files, list) or not all(isinstance(e, dict) and "name" in e and "download_url" in e
                                               for e in files):
        raise DownloadError(f"{api_url}: unexpected figshare file list")
    return files


def _unzip_flat(archive_path: Path, dest: Path) -> None:
    """Unpack members into ``dest`` by their base names (paths from the archive are never trusted),
    each through a ``.part`` file renamed when complete."""
    with zipfile.ZipFile(archive_path) as archive:
        for member in archive.infolist():
            name = Path(member.filename).name
            if member.is_dir() or not name:
                continue
            target = dest / name
            if target.is_file() and target.stat().st_size == member.file_size:
                continue  # unpacked by an earlier, interrupted run
            part = dest / (name + ".part")
            with archive.open(member) as src, part.open("wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(part, target)


def download_figshare(dest: str | Path, api_url: str = FIGSHARE_API, attempts: int = 3,
                      timeout: float = 60.0) -> list[Path]:
    """Fetch every file of the figshare article into ``dest`` and unpack its zip parts.

    Each file is checked against the size and MD5 (``computed_md5``) that figshare lists for it;
    files already present and matching are not fetched again, and a cut-off one resumes.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fetched = []
    for entry in _list_figshare(api_url, timeout):
        target = dest / Path(str(entry["name"])).name
        size = entry.get("size")
        digest = entry.get("computed_md5") or entry.get("supplied_md5")
        expected = Expected(int(str(size)) if size is not None else None, str(digest) if digest else None)
        download_file(str(entry["download_url"]), target, expected, attempts, timeout)
        fetched.append(target)
        if target.suffix == ".zip":
            _unzip_flat(target, dest)
    return fetched
