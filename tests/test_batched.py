"""The one batched path (brain_tumor.batched) answers as the model does on the whole set at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor.answers import NO_TUMOUR
from brain_tumor.batched import (
    batches,
    chunks,
    embeddings,
    embeddings_for,
    iter_predictions,
    predict_slices,
    slice_logits,
)
from brain_tumor.evaluation.ood import knn_scores, make_bank
from brain_tumor.gate import fit_gate
from brain_tumor.inference import Predictor
from tests.conftest import synthetic_slice

N, BATCH = 7, 3  # not a multiple: batches of 3, 3 and 1


def _slices() -> list[np.ndarray]:
    """Float [0, 1] slices of several sizes (to_tensor brings them to the model's 64 px)."""
    rng = np.random.default_rng(5)
    return [synthetic_slice(rng, i % 3, size=48 + 8 * i) / 255.0 for i in range(N)]


def _close(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> bool:
    """Equal but for the last digits, which the batch size moves (untrained: values in the hundreds)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


def _between(values: torch.Tensor) -> float:
    """A threshold midway between the middle two values: some above it, some below, none close."""
    ordered = values.sort().values
    return float(ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    """The tiny model with everything predict_batch applies, each set so that it splits the
    slices: temperature, referral threshold, flip TTA, an OOD detector (a bank of some of the
    slices' own features) and a no-tumour gate."""
    p = Predictor.from_checkpoint(tiny_checkpoint).use_tta("flip")
    whole = torch.stack([p.to_tensor(im) for im in _slices()])
    features, logits = p.embed(whole)
    logits = p.logits(whole)
    p.temperature = float(logits.std())  # untrained: logits in the hundreds; this spreads the probabilities
    p.refer_threshold = _between((logits / p.temperature).softmax(-1).max(-1).values)
    bank = make_bank(features[:4])
    p.ood = {"bank": bank, "k": 2, "threshold": _between(knn_scores(bank, features, 2))}
    p.gate = fit_gate(features.numpy(), np.arange(N) % 2, "sha")
    return p


def test_batches_keep_order_and_keys(predictor: Predictor) -> None:
    images = _slices()
    out = list(batches(predictor, enumerate(images), BATCH))
    assert [keys for keys, _ in out] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (1, 64, 64) for _, b in out)
    assert torch.equal(torch.cat([b for _, b in out]), torch.stack([predictor.to_tensor(im) for im in images]))
    assert [len(c) for c in chunks(torch.zeros((N, 1, 4, 4), dtype=torch.uint8), BATCH)] == [3, 3, 1]
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(predictor, enumerate(images), 0))


def test_logits_and_features_match_the_whole_set_at_once(predictor: Predictor) -> None:
    images = _slices()
    whole = torch.stack([predictor.to_tensor(im) for im in images])
    logits = slice_logits(predictor, images, batch_size=BATCH)
    assert logits.shape == (N, 3)
    assert _close(logits, predictor.logits(whole))
    features, plain = embeddings(predictor, images, batch_size=BATCH)
    expected_features, expected_plain = predictor.embed(whole)
    assert features.shape == (N, 2048) and _close(features, expected_features) and _close(plain, expected_plain)
    prepared = embeddings_for(predictor, whole, batch_size=BATCH)
    assert _close(prepared[0], expected_features) and _close(prepared[1], expected_plain)


def test_predictions_match_predict_batch_on_the_whole_set(predictor: Predictor) -> None:
    images = _slices()
    sources = [f"slice-{k}" for k in range(N)]
    expected = predictor.predict_batch(torch.stack([predictor.to_tensor(im) for im in images]), sources)
    got = predict_slices(predictor, images, sources, batch_size=BATCH)
    assert [p.source for p in got] == sources and [p.predicted for p in got] == [p.predicted for p in expected]
    assert [p.refer for p in got] == [p.refer for p in expected]
    tumour = [b for b in expected if b.predicted != NO_TUMOUR]
    assert tumour and len(tumour) < N and any(b.refer for b in tumour) and not all(b.refer for b in tumour)
    assert len({b.extra["out_of_distribution"] for b in expected}) == 2  # flagged and not: the OOD threshold counts
    for a, b in zip(got, expected):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)  # calibrated: temperature 2
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
        assert a.extra.keys() == b.extra.keys() and a.extra["out_of_distribution"] == b.extra["out_of_distribution"]
        assert a.extra["ood_score"] == pytest.approx(b.extra["ood_score"], abs=1e-4)
        assert a.extra["p_no_tumour"] == pytest.approx(b.extra["p_no_tumour"], abs=1e-4)
    assert [p.source for p in predict_slices(predictor, images, batch_size=BATCH)] == [str(k) for k in range(N)]
    with pytest.raises(ValueError, match="7 slices but 2 sources"):
        predict_slices(predictor, images, ["a", "b"])


def test_a_stream_is_read_one_batch_at_a_time(predictor: Predictor) -> None:
    read: list[int] = []

    def stream() -> Iterator[tuple[str, np.ndarray]]:
        for k, image in enumerate(_slices()):
            read.append(k)
            yield str(k), image

    answers = iter_predictions(predictor, stream(), batch_size=BATCH)
    assert read == []
    first = [next(answers) for _ in range(BATCH)]
    assert read == [0, 1, 2] and [p.source for p in first] == ["0", "1", "2"]
    assert [p.source for p in answers] == ["3", "4", "5", "6"] and read == list(range(N))


def test_an_empty_set(predictor: Predictor) -> None:
    assert predict_slices(predictor, []) == [] and list(iter_predictions(predictor, [])) == []
    logits = slice_logits(predictor, [], progress=True)
    assert logits.shape == (0, 3) and logits.dtype == np.float32
    features, plain = embeddings(predictor, [])
    assert features.shape == (0, 2048) and plain.shape == (0, 3)
    features, plain = embeddings_for(predictor, torch.zeros((0, 1, 64, 64), dtype=torch.uint8))
    assert features.shape == (0, 2048) and plain.shape == (0, 3)


def test_the_shift_benchmark_predicts_through_the_path(predictor: Predictor) -> None:
    from brain_tumor.robustness import predict_on

    images = _slices()
    expected = predictor.logits(torch.stack([predictor.to_tensor(im) for im in images])).argmax(1)
    assert predict_on(predictor, images, batch=BATCH).tolist() == expected.tolist()
    assert predict_on(predictor, []).shape == (0,)
