"""Does the tumour map's "no tumour" answer hold on every engine? (``train.tumour_map``, issue 22)

A model with a tumour map is exported (``brain_tumor.export``: its ONNX exports carry the map's
evidence as a third output; int8 keeps the map's head in fp32), then the held-out slices of one
CV fold, as they are and with the tumour erased (box fill, box grown by 15%), go through each
engine the tool can choose: PyTorch fp32 and bf16, ONNX Runtime fp32 and int8, OpenVINO (its own
precision: bf16 where the CPU has it natively). For each: the evidence's largest gap to PyTorch
fp32, how many slices the map answers otherwise than PyTorch fp32 does, the share answered "no
tumour" as they are and with the tumour erased, the accuracy with the answer on, and the
throughput on this machine's cores. The threshold is the checkpoint's (fitted on inner
validation slices at training's precision); nothing is tuned here.

    python bench/engines_tumour_map.py -m runs/cv/NAME/fold-1/model.pt --split results/cv/NAME/splits.json \\
        --fold 1 --data ../shared/data/figshare-cheng2015 --output results/bench/engines-tumour-map
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tumour_map import held_out_fold_parser  # bench/tumour_map.py: this script's folder is on the path

from brain_tumor.atomic import write_text
from brain_tumor.batched import predict_slices
from brain_tumor.config import portable_path
from brain_tumor.data.erasing import GROW, erase_box_fill
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import load_records
from brain_tumor.data.splits import load_split
from brain_tumor.environment import describe_environment
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.export import export_onnx, int8_path, quantize_int8
from brain_tumor.inference import Predictor
from brain_tumor.model_loading import load_predictor, model_sha256

ENGINES = {  # name -> load_predictor's arguments (the exports are beside the checkpoint's copy)
    "pytorch fp32": {"engine": "pytorch", "precision": "fp32"},
    "pytorch bf16": {"engine": "pytorch", "precision": "bf16"},
    "onnx fp32": {"onnx": "fp32"},
    "onnx int8": {"onnx": "int8"},
    "openvino (own precision)": {"engine": "openvino"},
}


def exported_copy(model: Path, work: Path, calibration: np.ndarray) -> dict[str, Path]:
    """The checkpoint linked into ``work`` (so no calibration or gate beside the original joins in)
    with its fp32 and int8 exports made beside it (again on every run)."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "model.pt"
    if checkpoint.is_symlink() or checkpoint.exists():
        checkpoint.unlink()  # a link left by another model's run
    checkpoint.symlink_to(model.resolve())
    fp32 = export_onnx(checkpoint, work / "model.onnx")
    return {"checkpoint": checkpoint, "fp32": fp32, "int8": quantize_int8(fp32, int8_path(fp32), calibration)}


def run_engine(predictor: Predictor, images: list[np.ndarray], desc: str) -> tuple[list[Any], float]:
    predict_slices(predictor, images[:8])  # warm-up: first-call allocations are not the engine's speed
    started = time.perf_counter()
    answers = predict_slices(predictor, images, progress=True, desc=desc)
    return answers, len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = held_out_fold_parser(__doc__)
    parser.add_argument("--calibration-slices", type=int, default=200, help="training slices for int8's ranges")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/engines-tumour-map"))
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    records = load_records(args.data)
    split = load_split(args.split, args.fold)
    test = [i for i in split.test if records[i].box is not None]
    reference = Predictor.from_checkpoint(args.model)
    if reference.evidence_record is None:
        raise SystemExit(f"{args.model}: has no tumour map with a threshold (train it with --set train.tumour_map=...)")
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(split.train, size=min(args.calibration_slices, len(split.train)), replace=False)
    calibration = torch.stack([reference.to_tensor(read_slice(records[int(i)].path)) for i in chosen]).numpy()
    files = exported_copy(args.model, args.work_dir, calibration)
    names = reference.class_names
    labels = np.array([names.index(records[i].label) for i in test])
    images = [read_slice(records[i].path) for i in tqdm(test, desc="reading test slices", unit="img")]
    erased = [erase_box_fill(im, records[i].box, GROW) for im, i in zip(images, test)]  # type: ignore[arg-type]
    rows: dict[str, Any] = {}
    base: dict[str, np.ndarray] = {}
    for name, how in ENGINES.items():
        kwargs: dict[str, Any] = {**how, "onnx": files[how["onnx"]]} if "onnx" in how else dict(how)
        predictor = load_predictor(files["checkpoint"], **kwargs)
        engine = dict(predictor.compute["engine"])
        if engine.get("onnx_path"):  # the file's name: the work folder is this machine's
            engine["onnx_path"] = Path(engine["onnx_path"]).name
        row: dict[str, Any] = {"compute": engine}
        for shown, kind in ((images, "as is"), (erased, "erased")):
            answers, speed = run_engine(predictor, shown, f"{name}, {kind}")
            evidence = np.array([float(p.extra["tumour_evidence"]) for p in answers])
            none = np.array([p.predicted == "no_tumour" for p in answers])
            if name == "pytorch fp32":  # the first engine: the reference
                base[kind] = evidence
            threshold = float(reference.evidence_record["threshold"])
            flips = (evidence < threshold) != (base[kind] < threshold)
            row[kind] = {"called_no_tumour_pct": round(100 * float(none.mean()), 2),
                         "max_abs_evidence_gap": float(np.abs(evidence - base[kind]).max()),
                         "answers_unlike_pytorch_fp32": int(flips.sum()), "images_per_second": round(speed, 1)}
            if kind == "as is":
                right = np.array([p.predicted == names[y] for p, y in zip(answers, labels)])
                row[kind]["accuracy_with_answer_pct"] = round(100 * float(right.mean()), 2)
        rows[name] = row
    env = describe_environment()
    result = {"model": portable_path(args.model), "model_sha256": model_sha256(args.model), "fold": args.fold,
              "n_test": len(test), "threshold": reference.evidence_record["threshold"], "seed": args.seed,
              "calibration_slices": len(chosen), "eraser": f"box_fill, box grown by {GROW:.0%}", "engines": rows,
              "environment": {**env, "openvino": version("openvino")}}
    args.output.mkdir(parents=True, exist_ok=True)
    write_text(args.output / "engines_tumour_map.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text(args.output / "engines_tumour_map.md", markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    header = ["engine", "as is: no tumour %", "accuracy %", "erased: no tumour %", "max evidence gap",
              "answers unlike PyTorch fp32 (as is / erased)", "img/s"]
    body = [[name, f"{v['as is']['called_no_tumour_pct']:.2f}", f"{v['as is']['accuracy_with_answer_pct']:.2f}",
             f"{v['erased']['called_no_tumour_pct']:.2f}",
             f"{max(v['as is']['max_abs_evidence_gap'], v['erased']['max_abs_evidence_gap']):.2e}",
             f"{v['as is']['answers_unlike_pytorch_fp32']} / {v['erased']['answers_unlike_pytorch_fp32']}",
             f"{v['as is']['images_per_second']:.1f}"] for name, v in r["engines"].items()]
    return "\n".join([f"# The tumour map's answer on every engine: `{r['model']}` (CV fold {r['fold']})", "",
                      f"{r['n_test']} held-out slices as they are and with the tumour erased ({r['eraser']}); "
                      f"threshold {r['threshold']:.4f} from the checkpoint; int8 calibrated on "
                      f"{r['calibration_slices']} training slices. CPU: {r['environment'].get('cpu')}.", "",
                      markdown_table(header, body), ""])


if __name__ == "__main__":
    main()
