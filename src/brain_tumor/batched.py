"""The one batched path through :class:`~brain_tumor.inference.Predictor` for slices in memory.

Float [0, 1] slices of any size (as :func:`~brain_tumor.data.imageio.read_slice` returns them)
are prepared by :meth:`Predictor.to_tensor` and go through the model ``batch_size`` at a time, in
order, read lazily (a stream of files is read one batch ahead, not all at once):

- :func:`predict_slices` / :func:`iter_predictions`: answers as :meth:`Predictor.predict_batch`
  gives them (calibration, referral, OOD flag, no-tumour gate, test-time augmentation);
- :func:`slice_logits`: raw logits as :meth:`Predictor.logits` gives them;
- :func:`embeddings`: penultimate features and logits as :meth:`Predictor.embed` gives them.

uint8 ``[N, 1, S, S]`` slices already prepared (the training cache) go through
:meth:`Predictor.logits_for` and :func:`embeddings_for`. Elsewhere: ``predict`` streams files
through :meth:`Predictor.predict_files`, and the service batches concurrent requests
(:mod:`brain_tumor.serve.batching`) into :meth:`Predictor.predict_batch`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from brain_tumor.answers import Prediction
from brain_tumor.inference import Predictor
from brain_tumor.model import has_tumour_map

K = TypeVar("K")
Out = TypeVar("Out")


def batches(predictor: Predictor, slices: Iterable[tuple[K, np.ndarray]],
            batch_size: int) -> Iterator[tuple[list[K], torch.Tensor]]:
    """``(keys, uint8 [B, 1, S, S])`` for ``(key, float slice)`` pairs, ``batch_size`` pairs a
    batch (the last may be shorter), each slice read from ``slices`` only when its batch is due."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pairs = iter(slices)
    while chunk := list(islice(pairs, batch_size)):
        yield [key for key, _ in chunk], torch.stack([predictor.to_tensor(image) for _, image in chunk])


def chunks(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``batch_size`` rows of prepared uint8 ``[N, 1, S, S]`` images."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return (images[i:i + batch_size] for i in range(0, len(images), batch_size))


def _shown(items: Iterable[Out], progress: bool, desc: str, n: int | None, batch_size: int) -> Iterable[Out]:
    """``items`` (batches) behind a tqdm bar when ``progress``; ``n``: slices, if known."""
    if not progress:
        return items
    return tqdm(items, desc=desc, unit="batch", leave=False, total=None if n is None else math.ceil(n / batch_size))


def _size(images: Iterable[object]) -> int | None:
    return len(images) if isinstance(images, Sequence) else None


def iter_predictions(predictor: Predictor, slices: Iterable[tuple[str, np.ndarray]], batch_size: int = 32,
                     progress: bool = False, desc: str = "predicting") -> Iterator[Prediction]:
    """Answers for ``(source, float slice)`` pairs, in order, :meth:`Predictor.predict_batch` on
    each batch; lazy, so a generator of files is read one batch at a time."""
    for sources, batch in _shown(batches(predictor, slices, batch_size), progress, desc, _size(slices), batch_size):
        yield from predictor.predict_batch(batch, sources)


def predict_slices(predictor: Predictor, images: Sequence[np.ndarray], sources: Sequence[str] | None = None,
                   batch_size: int = 32, progress: bool = False, desc: str = "predicting") -> list[Prediction]:
    """One answer per float [0, 1] slice, in order, as :meth:`Predictor.predict_batch` gives it;
    ``sources`` name them (default: their positions, ``"0"``, ``"1"``, ...)."""
    names = [str(k) for k in range(len(images))] if sources is None else list(sources)
    if len(names) != len(images):
        raise ValueError(f"{len(images)} slices but {len(names)} sources")
    return list(iter_predictions(predictor, list(zip(names, images)), batch_size, progress, desc))


def _logits(predictor: Predictor, each: Iterable[torch.Tensor]) -> np.ndarray:
    out = [predictor.logits(batch).float() for batch in each]
    return torch.cat(out).numpy() if out else np.zeros((0, len(predictor.class_names)), np.float32)


def slice_logits(predictor: Predictor, images: Iterable[np.ndarray], batch_size: int = 64, progress: bool = False,
                 desc: str = "predicting") -> np.ndarray:
    """Logits ``[N, classes]`` of float [0, 1] slices, as :meth:`Predictor.logits` gives them."""
    tensors = (batch for _, batch in batches(predictor, ((None, im) for im in images), batch_size))
    return _logits(predictor, _shown(tensors, progress, desc, _size(images), batch_size))


def _embed(predictor: Predictor, each: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [predictor.embed(batch) for batch in each]
    if pairs:
        return torch.cat([f for f, _ in pairs]), torch.cat([z for _, z in pairs])
    head = predictor.network.get_submodule("fc")
    width = head.in_features if isinstance(head, nn.Linear) else 0
    return torch.zeros((0, width)), torch.zeros((0, len(predictor.class_names)))


def embeddings(predictor: Predictor, images: Iterable[np.ndarray], batch_size: int = 64, progress: bool = False,
               desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``(penultimate features [N, D], logits [N, classes])`` of float [0, 1] slices (PyTorch path,
    no test-time augmentation: :meth:`Predictor.embed`)."""
    tensors = (batch for _, batch in batches(predictor, ((None, im) for im in images), batch_size))
    return _embed(predictor, _shown(tensors, progress, desc, _size(images), batch_size))


def embeddings_for(predictor: Predictor, images: torch.Tensor, batch_size: int = 64, progress: bool = False,
                   desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`embeddings` of uint8 ``[N, 1, S, S]`` slices already prepared at the model's size."""
    return _embed(predictor, _shown(chunks(images, batch_size), progress, desc, len(images), batch_size))


def logits_and_evidence(predictor: Predictor, images: torch.Tensor, batch_size: int = 64,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, classes], tumour evidence [N])`` of uint8 ``[N, 1, S, S]`` prepared slices, both
    from one PyTorch forward pass a batch (a model with a tumour map; the logits as
    :meth:`Predictor.logits` gives them, so a flip TTA adds its mirrored pass, and the evidence is
    the unflipped slice's: :mod:`brain_tumor.tumour_evidence`)."""
    if not has_tumour_map(predictor.network):
        raise ValueError("this model has no tumour map")
    if predictor.onnx is not None:
        raise ValueError("the tumour evidence comes from the PyTorch engine; this predictor runs an export")
    logits, evidence = [], []
    for batch in _shown(chunks(images, batch_size), progress, "predicting", len(images), batch_size):
        out = predictor.forward_parts(batch, ("evidence",))
        logits.append(predictor.with_tta(out["logits"], batch))
        evidence.append(out["evidence"])
    if not logits:
        return np.zeros((0, len(predictor.class_names)), np.float32), np.zeros(0, np.float32)
    return torch.cat(logits).float().numpy(), torch.cat(evidence).float().numpy()


def slice_evidence(predictor: Predictor, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Tumour evidence ``[N]`` alone (:func:`logits_and_evidence`)."""
    return logits_and_evidence(predictor, images, batch_size)[1]
