"""Out-of-distribution flagging: distance to the training set in the network's feature space.

Score: cosine distance from an input's penultimate (2048-d) features to its k-th nearest
neighbour among training slices (Sun et al. 2022, "Out-of-distribution detection with deep
nearest neighbors"); higher means less like anything seen in training. The threshold is a
quantile of the scores of the validation slices, so a chosen share of in-distribution inputs
is flagged. Energy (-logsumexp of logits) is kept as a baseline score.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import data as skdata
from skimage.color import rgb2gray
from skimage.draw import ellipse


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def knn_scores(bank: torch.Tensor, features: torch.Tensor, k: int = 10, chunk: int = 256) -> torch.Tensor:
    """Cosine distance of each row of ``features`` to its ``k``-th nearest row of ``bank``
    (``bank`` rows already L2-normalised)."""
    queries = _normalise(features)
    out = []
    for i in range(0, len(queries), chunk):
        similarity = queries[i:i + chunk] @ bank.float().T
        out.append(1 - similarity.topk(min(k, bank.shape[0]), dim=1).values[:, -1])
    return torch.cat(out) if out else torch.zeros(0)


def energy_scores(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy; higher = less typical (Liu et al. 2020)."""
    return -torch.logsumexp(logits.float(), dim=1)


def make_bank(train_features: torch.Tensor, max_size: int = 4096, seed: int = 0) -> torch.Tensor:
    """L2-normalised training features (a random subset when there are many), stored as fp16."""
    if len(train_features) > max_size:
        keep = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(seed))[:max_size]
        train_features = train_features[keep]
    return _normalise(train_features).half()


def threshold_for_rate(val_scores: np.ndarray, flag_rate: float = 0.05) -> float:
    """The score above which ``flag_rate`` of in-distribution validation inputs lie."""
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), 1 - flag_rate))


def chest_xray_like(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A synthetic frontal chest radiograph: bright body, dark lungs, ribs, spine and heart."""
    img = np.zeros((size, size), np.float32)
    rr, cc = ellipse(size * 0.55, size / 2, size * 0.45, size * 0.42, shape=img.shape)
    img[rr, cc] = 0.75
    for side in (-1, 1):
        rr, cc = ellipse(size * 0.5, size / 2 + side * size * 0.19, size * 0.3, size * 0.13, shape=img.shape)
        img[rr, cc] = 0.2
        for r in range(7):
            y = size * (0.27 + 0.075 * r)
            xs = np.linspace(size / 2 + side * 0.04 * size, size / 2 + side * 0.34 * size, 200)
            ys = y + 0.0009 * (xs - size / 2) ** 2 * (0.7 + 0.1 * rng.random())
            for dy in range(-3, 4):
                yi = np.clip((ys + dy).astype(int), 0, size - 1)
                img[yi, np.clip(xs.astype(int), 0, size - 1)] = 0.65
    img[:, int(size * 0.47):int(size * 0.53)] += 0.2
    rr, cc = ellipse(size * 0.62, size * 0.55, size * 0.13, size * 0.12, shape=img.shape)
    img[rr, cc] = 0.7
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def refuse_set(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Images the model must not answer, by kind: natural photos, blanks, noise, chest X-ray-like."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in ("astronaut", "camera", "cat", "coffee", "rocket", "coins", "moon", "page", "horse", "text",
                 "brick", "grass", "gravel", "clock", "hubble_deep_field", "immunohistochemistry", "retina",
                 "colorwheel", "logo", "motorcycle_left", "chelsea"):
        loader = getattr(skdata, name, None)
        if loader is None:
            continue
        try:
            image = np.asarray(loader(), dtype=np.float32)
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        if image.ndim == 3:
            image = rgb2gray(image[..., :3] / (255.0 if image.max() > 1 else 1.0))
        else:
            image = image / max(float(image.max()), 1.0)
        photos.append(np.clip(image, 0, 1).astype(np.float32))
    blanks = [np.full((512, 512), v, np.float32) for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    noise = ([rng.random((512, 512), dtype=np.float32) for _ in range(5)]
             + [np.clip(rng.normal(0.5, 0.2, (512, 512)), 0, 1).astype(np.float32) for _ in range(5)]
             + [(rng.random((512, 512)) > 0.5).astype(np.float32) for _ in range(5)])
    xrays = [chest_xray_like(rng) for _ in range(10)]
    return {"natural_photo": photos, "blank": blanks, "noise": noise, "chest_xray_like": xrays}
