"""Model packages: one folder a user can download, verify and load without unpickling anything.

    model.safetensors      the network's weights
    ood_bank.safetensors   the OOD detector's training features (when the model has one)
    config.json            architecture, classes, preprocessing, calibration, OOD settings,
                           the training recipe, metrics, code and data versions
    model_card.md          intended use, what it must not be used for, metrics
    model.onnx, model.int8.onnx   exported engines (when exported)
    calibration.json       temperature, referral threshold, conformal sets (when calibrated)
    gate.json              the no-tumour gate fitted for these weights (when fitted)
    shortcut.json          the shortcut benchmark, with this model's entry matched by its hash (when measured)
    SHA256SUMS             the hash of every other file; checked before anything is loaded

A model reference is a checkpoint file, a package folder, or ``hf://owner/name[@revision]`` (a
package on the Hugging Face Hub, fetched into the local cache by huggingface_hub; with
``HF_HUB_OFFLINE=1`` only the cache is used). Written by ``brain-tumor export --package``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PACKAGE_FORMAT = "brain-tumor-package/1"
SUMS = "SHA256SUMS"
HUB_PREFIX = "hf://"


class PackageError(ValueError):
    """A package that cannot be used; the message is one line."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_sums(folder: Path) -> Path:
    """``SHA256SUMS`` over every file of the package folder (sha256sum's format)."""
    lines = [f"{sha256(p)}  {p.name}" for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS]
    (folder / SUMS).write_text("\n".join(lines) + "\n")
    return folder / SUMS


def verify(folder: Path) -> dict[str, str]:
    """Check every file against ``SHA256SUMS``; returns ``{name: hash}``. One line on failure."""
    sums_file = folder / SUMS
    if not sums_file.is_file():
        raise PackageError(f"{folder}: no {SUMS}; not a brain-tumor package")
    expected: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise PackageError(f"{sums_file}: malformed line {line[:80]!r}")
        expected[name] = digest
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise PackageError(f"{folder}: {name} is missing")
        if sha256(path) != digest:
            raise PackageError(f"{folder}: {name} does not match its SHA-256 in {SUMS} (changed or damaged)")
    if "config.json" not in expected or "model.safetensors" not in expected:
        raise PackageError(f"{folder}: {SUMS} must cover config.json and model.safetensors")
    return expected


def resolve_reference(reference: str | Path) -> Path:
    """A local path for a model reference: the path itself, or the cached snapshot of a hub id."""
    text = str(reference)
    if text.startswith("hf:/") and not text.startswith(HUB_PREFIX):
        text = HUB_PREFIX + text[len("hf:/"):]  # a CLI Path argument collapses the double slash
    if not text.startswith(HUB_PREFIX):
        return Path(reference)
    repo, _, revision = text[len(HUB_PREFIX):].partition("@")
    if repo.count("/") != 1:
        raise PackageError(f"{text}: expected hf://owner/name[@revision]")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo, revision=revision or None))
    except LocalEntryNotFoundError as exc:
        raise PackageError(f"{text}: not in the local cache and the Hub cannot be reached "
                           "(offline, or HF_HUB_OFFLINE=1)") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise PackageError(f"{text}: cannot fetch ({str(exc).splitlines()[0] if str(exc) else exc})") from exc


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_package(folder: Path) -> dict[str, Any]:
    """The package as a checkpoint payload (``state_dict``, ``architecture``, ``class_names``, ...),
    after its files are verified. Weights come from safetensors: nothing is unpickled."""
    from safetensors.torch import load_file

    verify(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{folder}/config.json: not JSON ({exc.msg})") from exc
    if config.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{folder}: format {config.get('format')!r}, expected {PACKAGE_FORMAT}")
    try:
        state = load_file(folder / "model.safetensors")
        ood = config.get("ood")
        if ood is not None:
            ood = {**ood, "bank": load_file(folder / "ood_bank.safetensors")["bank"]}
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own types)
        raise PackageError(f"{folder}: cannot read the weights ({str(exc).splitlines()[0]})") from exc
    payload = {k: v for k, v in config.items() if k not in ("format", "ood", "recipe", "package")}
    payload.update(state_dict=state, config=config.get("recipe", {}), ood=ood,
                   package={"path": str(folder), **config.get("package", {})})
    return payload
