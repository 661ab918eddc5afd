"""Speed benchmark on this machine: compute peak, training and inference throughput, latency.

Every figure is a median over repeats, measured side by side in one run, and also given as a
share of the measured matmul peak (ResNet-50 at 224 px: ~8.2 GFLOP forward, ~24.6 to train).

    python bench/speed.py --checkpoint runs/paper-split/freeze-15/model.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.environment import describe_environment  # noqa: E402

FWD_GFLOP, TRAIN_GFLOP = 8.2, 24.6


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def training_throughput(checkpoint_weights: str, weights_path: str | None, images: torch.Tensor,
                        labels: torch.Tensor, *, channels_last: bool, bf16: bool, batch: int, repeats: int) -> float:
    """img/s of the product's training step (augmentation, forward, loss, backward, Adam) at freeze 30."""
    from brain_tumor.data.datamodule import SliceDataset
    from brain_tumor.model import build_classifier, freeze_first_keras_layers, preprocessing_for
    from brain_tumor.training.module import SliceClassifier
    from brain_tumor.transforms import train_preset

    network = build_classifier(checkpoint_weights, 3, weights_path)
    freeze_first_keras_layers(network, 30)
    module = SliceClassifier(network, preprocessing_for(checkpoint_weights), channels_last=channels_last).train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    dataset = SliceDataset(images, labels, list(range(len(images))), train_preset("paper"))
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True))

    def step() -> None:
        x, y = next(loader)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = module(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return batch / median_time(step, repeats)


@torch.inference_mode()
def inference_throughput(network: torch.nn.Module, normalize: torch.nn.Module, images: torch.Tensor, *,
                         channels_last: bool, bf16: bool, repeats: int) -> float:
    net = network.eval().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def run() -> None:
        x = normalize(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x)

    return len(images) / median_time(run, repeats)


def single_image_latency(checkpoint: Path, image_path: Path, repeats: int) -> dict[str, float]:
    """Milliseconds from file on disk to prediction (decode, resize, normalise, forward)."""
    from brain_tumor.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    predictor.network.to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        list(predictor.predict_files([image_path]))
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def onnx_throughput(checkpoint: Path, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(batch img/s, single-image ms median) through ONNX Runtime fp32."""
    from brain_tumor.export import OnnxPredictor, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(checkpoint, Path(tmp) / "m.onnx")
        ort = OnnxPredictor(path)
        batch = images.numpy()
        rate = len(batch) / median_time(lambda: ort.logits(batch), repeats)
        single = median_time(lambda: ort.logits(batch[:1]), repeats * 5) * 1000
    return rate, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", type=Path,
                        default=Path("../shared/data/figshare-cheng2015/meningioma/1.jpg"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("results/bench/speed.json"))
    args = parser.parse_args()
    from brain_tumor.inference import Predictor
    from brain_tumor.training.fit import load_data

    meta = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    cfg = meta["config"]
    start = time.perf_counter()
    _, images, labels = load_data(cfg["data"]["root"], 224, cfg["data"]["cache_dir"])
    cache_seconds = time.perf_counter() - start
    images, labels = images[:512], labels[:512]
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    out: dict[str, object] = {"peak_gflops": peak, "dataset_cache_load_seconds": cache_seconds}
    train = {}
    for name, cl, bf in [("baseline_fp32", False, False), ("fp32_channels_last", True, False),
                         ("bf16_autocast_channels_last", True, True)]:
        rate = training_throughput(cfg["model"]["weights"], cfg["model"]["weights_path"], images, labels,
                                   channels_last=cl, bf16=bf, batch=32, repeats=args.repeats)
        ceiling = (peak["bf16"] if bf else peak["fp32"]) / TRAIN_GFLOP
        train[name] = {"img_per_s": rate, "share_of_peak": rate / ceiling}
        print(name, "train", round(rate, 2), flush=True)
    out["training_batch32"] = train
    predictor = Predictor.from_checkpoint(args.checkpoint)
    infer = {}
    for name, cl, bf in [("baseline_fp32", False, False), ("fp32_channels_last", True, False),
                         ("bf16_autocast_channels_last", True, True)]:
        rate = inference_throughput(predictor.network, predictor.normalize, images[:64], channels_last=cl,
                                    bf16=bf, repeats=args.repeats)
        ceiling = (peak["bf16"] if bf else peak["fp32"]) / FWD_GFLOP
        infer[name] = {"img_per_s": rate, "share_of_peak": rate / ceiling}
        print(name, "infer", round(rate, 2), flush=True)
    onnx_rate, onnx_single = onnx_throughput(args.checkpoint, images[:64], args.repeats)
    infer["onnxruntime_fp32"] = {"img_per_s": onnx_rate, "share_of_peak": onnx_rate / (peak["fp32"] / FWD_GFLOP)}
    out["inference_batch64"] = infer
    out["onnxruntime_single_forward_ms"] = onnx_single
    out["single_image_latency_ms_pytorch_fp32"] = single_image_latency(args.checkpoint, args.image, 20)
    base = train["baseline_fp32"]["img_per_s"]
    out["ratios_vs_baseline"] = {"training": {k: v["img_per_s"] / base for k, v in train.items()},
                                 "inference": {k: v["img_per_s"] / infer["baseline_fp32"]["img_per_s"]
                                               for k, v in infer.items()}}
    out["environment"] = describe_environment()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "environment"}, indent=2))


if __name__ == "__main__":
    main()
