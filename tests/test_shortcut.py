"""The shortcut benchmark: erasing and isolating the tumour box, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.data.erasing import (
    box_slices,
    erase_box_fill,
    erase_inpaint,
    erase_mirror,
    erase_tissue_patch,
    tumour_on_blank,
    tumour_on_tissue,
)
from brain_tumor.evaluation.shortcut import answer_kinds


def head_with_tumour(size: int = 96) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    yy, xx = np.mgrid[:size, :size] / size
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, 0.3, 0.0).astype(np.float32)
    image[30:42, 20:32] = 0.95  # the tumour, left hemisphere
    return image, (26 / size, 36 / size, 12 / size, 12 / size)


def test_box_covers_the_grown_tumour() -> None:
    ys, xs = box_slices((0.5, 0.5, 0.2, 0.1), (100, 100), grow=0.0)
    assert (ys.start, ys.stop, xs.start, xs.stop) == (45, 55, 40, 60)
    ys, xs = box_slices((0.02, 0.5, 0.2, 0.1), (100, 100), grow=0.15)
    assert xs.start == 0  # clipped to the image


@pytest.mark.parametrize("eraser", [erase_box_fill, erase_inpaint, erase_mirror, erase_tissue_patch])
def test_erasers_remove_the_tumour_and_leave_the_rest(eraser) -> None:  # type: ignore[no-untyped-def]
    image, box = head_with_tumour()
    out = eraser(image, box)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out[30:42, 20:32].max() < 0.5  # the bright tumour is gone
    outside = np.ones_like(image, bool)
    outside[box_slices(box, image.shape)] = False
    assert np.array_equal(out[outside], image[outside])
    assert abs(float(np.median(out[33:39, 23:29])) - 0.3) < 0.05  # filled with tissue-like values


def test_isolators_keep_only_the_tumour() -> None:
    image, box = head_with_tumour()
    blank, tissue = tumour_on_blank(image, box), tumour_on_tissue(image, box)
    assert blank[30:42, 20:32].min() == pytest.approx(0.95) and blank[60:70, 60:70].max() == 0
    assert tissue[30:42, 20:32].min() == pytest.approx(0.95)
    assert np.unique(tissue[60:70, 60:70]).tolist() == pytest.approx([0.3])  # flat tissue, no anatomy


def test_answer_kinds_partition_the_slices() -> None:
    kinds = answer_kinds(np.array([0, 1, 2, 2]), np.array([0, 0, 2, 1]), np.array([False, False, True, False]))
    assert kinds["same"].tolist() == [True, False, False, False]
    assert kinds["other_tumour"].tolist() == [False, True, False, True]
    assert kinds["referred"].tolist() == [False, False, True, False]
    gated = answer_kinds(np.array([0, 1, 2, 2]), np.array([0, 0, 2, 1]), np.array([False, False, True, False]),
                         no_tumour=np.array([True, False, True, False]))
    assert gated["no_tumour"].tolist() == [True, False, False, False]  # a referral stays a referral
    assert gated["same"].tolist() == [False, False, False, False]
    assert sum(v.astype(int) for v in gated.values()).tolist() == [1, 1, 1, 1]


def test_tissue_patch_copies_tissue_from_elsewhere_and_is_reproducible() -> None:
    image, box = head_with_tumour()
    image = image + np.linspace(0, 0.05, image.size, dtype=np.float32).reshape(image.shape)  # no two pixels alike
    out = erase_tissue_patch(image, box)
    ys, xs = box_slices(box, image.shape)
    patch = out[ys, xs]
    assert np.array_equal(out, erase_tissue_patch(image, box))
    found = [(y, x) for y in range(image.shape[0] - patch.shape[0] + 1)
             for x in range(image.shape[1] - patch.shape[1] + 1)
             if np.array_equal(image[y:y + patch.shape[0], x:x + patch.shape[1]], patch)]
    assert found and found[0] != (ys.start, xs.start)  # a real patch of this slice, not the tumour's own


@pytest.mark.slow
def test_shortcut_test_command(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from brain_tumor.data.manifest import FIELDS

    rng = np.random.default_rng(0)
    rows = []
    for i in range(9):
        label = ["glioma", "meningioma", "pituitary"][i % 3]
        image, box = head_with_tumour(64)
        Image.fromarray((255 * np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
        rows.append([i + 1, label, f"{i}.png", f"p{i // 2}", "", *box])
    with (tmp_path / "manifest.csv").open("w") as f:
        f.write(",".join(FIELDS) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    import torch

    meta = torch.load(tiny_checkpoint, weights_only=True)
    meta["config"]["data"]["root"] = str(tmp_path)
    meta["config"]["data"]["cache_dir"] = str(tmp_path / "cache")
    checkpoint = tmp_path / "model.pt"
    torch.save(meta, checkpoint)
    split = {"name": "paper", "seed": 0, "train": [0, 1, 2], "val": [3], "test": [4, 5, 6, 7, 8]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["shortcut-test", "-m", f"plain={checkpoint}", "-m", f"again={checkpoint}",
                                      "--split", str(tmp_path / "split.json"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    models = json.loads((out / "shortcut.json").read_text())["models"]
    summary = models["plain"]["summary"]
    assert "paired_vs" not in models["plain"] and models["again"]["paired_vs"] == "plain"
    assert all(d["all"] == [0.0, 0.0, 0.0] for d in models["again"]["paired_same_class"].values())  # same model
    assert "Paired against `plain`" in (out / "shortcut.md").read_text()
    assert set(summary) == {"clean", "box_fill", "tissue_patch", "inpaint", "mirror", "tumour_on_blank",
                            "tumour_on_tissue"}
    for per_class in summary.values():
        shares = [per_class["all"][k][0] for k in ("same", "other_tumour", "no_tumour", "referred")]
        assert sum(shares) == pytest.approx(1.0)
        assert per_class["all"]["n"] == 5
    markdown = (out / "shortcut.md").read_text()
    assert (out / "shortcut_examples.png").is_file() and markdown.startswith("The tumour's box is grown by 15%")
    assert "\n## plain\n" in markdown and json.loads((out / "shortcut.json").read_text())["grow"] == 0.15
    assert len((out / "shortcut_predictions.csv").read_text().splitlines()) == 6
    assert "again/inpaint" in (out / "shortcut_predictions.csv").read_text().splitlines()[0]


def test_a_larger_grow_erases_what_surrounds_the_tumour_too() -> None:
    from brain_tumor.context_shortcut import render_variants

    yy, xx = np.mgrid[:100, :100] / 100
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.2, 0.3, 0.0).astype(np.float32)
    image[35:65, 35:65] = 0.6  # oedema around the tumour, beyond the default grown box
    image[45:55, 45:55] = 1.0  # the tumour
    box = (0.5, 0.5, 0.1, 0.1)
    tight, wide = render_variants([image], [box])["box_fill"][0], render_variants([image], [box], 1.0)["box_fill"][0]
    assert tight.max() < 1.0 and wide.max() < 1.0  # the tumour is gone either way
    assert np.isclose(tight[40, 40], 0.6) and not np.isclose(wide[40, 40], 0.6)  # the oedema only with grow 1
    on_blank = render_variants([image], [box], 1.0)["tumour_on_blank"][0]
    assert np.isclose(on_blank[40, 40], 0.6) and on_blank[10, 50] == 0  # isolating keeps the grown box only


def test_every_method_copes_with_a_box_grown_past_the_whole_slice() -> None:
    from brain_tumor.context_shortcut import render_variants

    image = np.full((64, 64), 0.4, dtype=np.float32)
    image[20:44, 20:44] = 0.9
    variants = render_variants([image], [(0.5, 0.5, 0.6, 0.6)], 1.0)  # 0.6 grown by 100% a side: 1.8 of the slice
    assert all(v[0].shape == image.shape and np.isfinite(v[0]).all() for v in variants.values())
    assert variants["inpaint"][0].max() < 0.9  # nothing left of the tumour
