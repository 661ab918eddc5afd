"""Download the official figshare release (article 1512427) for users with internet access."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
FIGSHARE_API = "https://api.figshare.com/v2/articles/1512427/files"


def _fetch(url: str, dest: Path) -> Path:
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0)
        with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    tmp.replace(dest)
    return dest


def download_figshare(dest: str | Path, api_url: str = FIGSHARE_API) -> list[Path]:
    """Fetch every file of the figshare article into ``dest`` and unpack its zip parts.

    Files already present are not fetched again, so an interrupted download resumes file by file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(api_url, timeout=60) as response:  # noqa: S310
        files = json.loads(response.read())
    fetched = []
    for entry in files:
        target = dest / Path(entry["name"]).name
        if not target.is_file() or target.stat().st_size != int(entry.get("size", target.stat().st_size)):
            _fetch(entry["download_url"], target)
        fetched.append(target)
        if target.suffix == ".zip":
            with zipfile.ZipFile(target) as archive:
                for member in archive.infolist():
                    name = Path(member.filename).name
                    if member.is_dir() or not name:
                        continue  # members are flattened; paths from the archive are never trusted
                    with archive.open(member) as src, (dest / name).open("wb") as out:
                        shutil.copyfileobj(src, out)
    return fetched
