"""Decode the dataset once into a uint8 tensor file that every later run reuses."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from brain_tumor.atomic import atomic_path
from brain_tumor.data.imageio import ImageReadError, read_slice
from brain_tumor.data.manifest import Record
from brain_tumor.data.preprocess import PIPELINE_VERSIONS, prepare_slice

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$BRAIN_TUMOR_CACHE`` or ``~/.cache/brain-tumor`` (never inside the read-only data)."""
    env = os.environ.get("BRAIN_TUMOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "brain-tumor"


def _cache_key(records: list[Record], size: int, pipeline: str = "paper") -> str:
    version = PIPELINE_VERSIONS[pipeline]
    h = hashlib.sha1((f"v1:{size}" if pipeline == "paper" else f"v{version}:{size}:{pipeline}").encode())
    for r in records:
        stat = os.stat(r.path) if os.path.exists(r.path) else None
        h.update(f"{r.path}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}".encode())
    return h.hexdigest()[:16]


def decode_all(records: list[Record], size: int, pipeline: str = "paper") -> tuple[torch.Tensor, list[int]]:
    """Decode and preprocess every record; unreadable files are reported and left out."""
    images: list[np.ndarray] = []
    kept: list[int] = []
    for i, record in enumerate(tqdm(records, desc=f"decoding to {size}px ({pipeline})", unit="img")):
        try:
            images.append(prepare_slice(read_slice(record.path), size, pipeline))
            kept.append(i)
        except ImageReadError as exc:
            log.error("skipped: %s", exc)
    stacked = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return torch.from_numpy(stacked).unsqueeze(1), kept


def cached_images(records: list[Record], size: int, cache_dir: str | Path | None = None,
                  pipeline: str = "paper") -> tuple[torch.Tensor, list[int]]:
    """``(uint8 [N, 1, size, size], kept record positions)``, decoded once then read from disk."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"images-{size}px-{_cache_key(records, size, pipeline)}.pt"
    if path.is_file():
        try:  # weights-only: a planted cache file runs no code; a damaged one is rebuilt
            payload = torch.load(path, weights_only=True)
            return payload["images"], payload["kept"].tolist()
        except Exception as exc:  # noqa: BLE001  (unpickling, zip and torch errors alike)
            log.warning("%s: unreadable image cache, rebuilding it (%s)", path, str(exc).splitlines()[0][:120])
    images, kept = decode_all(records, size, pipeline)
    with atomic_path(path) as tmp:
        torch.save({"images": images, "kept": torch.tensor(kept)}, tmp)
    return images, kept
