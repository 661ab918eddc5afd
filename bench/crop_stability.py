"""How stable the robust pipeline's head crop is under the shift benchmark's shifts.

For a seeded sample of real slices, the head box found on each shifted slice is compared with
the box found on the clean slice (intersection over union), and the dataset's tumour box is
checked to lie inside it (the crop must never cut the tumour away). Geometric shifts (framing,
rotation) move the head on purpose and are left to the shift benchmark. No model is involved.

    python bench/crop_stability.py --slices 300 --output results/robustness/crop_stability.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision import ops
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.data.imageio import read_slice  # noqa: E402
from brain_tumor.data.manifest import load_records  # noqa: E402
from brain_tumor.data.preprocess import PIPELINE_VERSIONS, head_box  # noqa: E402
from brain_tumor.environment import describe_environment  # noqa: E402
from brain_tumor.evaluation.shift import SHIFTS, shifted  # noqa: E402

Box = tuple[int, int, int, int]  # y0, y1, x0, x1
GEOMETRIC = ("framing", "rotation")


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(y0, y1, x0, x1)`` boxes (torchvision's, in x0y0x1y1)."""
    def xyxy(box: Box) -> torch.Tensor:
        return torch.tensor([[box[2], box[0], box[3], box[1]]], dtype=torch.float64)

    return float(ops.box_iou(xyxy(a), xyxy(b))[0, 0])


def tumour_inside(crop: Box, tumour: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """Share of the normalised ``(cx, cy, w, h)`` tumour box that lies inside ``crop``."""
    h, w = shape
    cx, cy, bw, bh = tumour
    ty0, ty1, tx0, tx1 = (cy - bh / 2) * h, (cy + bh / 2) * h, (cx - bw / 2) * w, (cx + bw / 2) * w
    dy = max(0.0, min(crop[1], ty1) - max(crop[0], ty0))
    dx = max(0.0, min(crop[3], tx1) - max(crop[2], tx0))
    return dy * dx / max((ty1 - ty0) * (tx1 - tx0), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/figshare-cheng2015"))
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("results/robustness/crop_stability.json"))
    args = parser.parse_args()
    records = [r for r in load_records(args.root) if r.box is not None]
    picked = np.random.default_rng(args.seed).choice(len(records), min(args.slices, len(records)), replace=False)
    rows: dict[str, dict[str, list[float]]] = {}
    for i in tqdm(picked, desc="slices", unit="slice"):
        record = records[int(i)]
        image = read_slice(record.path)
        clean = head_box(image)
        for family, severities in [("none", [None]), *[(f, [0, 1, 2]) for f in SHIFTS if f not in GEOMETRIC]]:
            for severity in severities:
                key = family if severity is None else f"{family} {SHIFTS[family][severity][0]}"
                box = head_box(image if severity is None else shifted(image, family, severity, seed=int(i)))
                row = rows.setdefault(key, {"iou": [], "inside": []})
                row["iou"].append(box_iou(box, clean))
                row["inside"].append(tumour_inside(box, record.box, image.shape))
    summary = {key: {"mean_iou_vs_clean": float(np.mean(v["iou"])), "min_iou_vs_clean": float(np.min(v["iou"])),
                     "slices_with_over_5pct_of_tumour_cut": int(np.sum(np.asarray(v["inside"]) < 0.95))}
               for key, v in rows.items()}
    out = {"slices": len(picked), "seed": args.seed, "robust_pipeline_version": PIPELINE_VERSIONS["robust"],
           "by_shift": summary, "environment": describe_environment()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(args.output)
    for key, v in summary.items():
        print(f"{key:22s} {v}")


if __name__ == "__main__":
    main()
