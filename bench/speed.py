"""Speed benchmark on this machine: compute peak, training and inference throughput, latency,
and how the paths that ``precision: auto`` and ``--engine auto`` pick compare with the fastest.

Writes ``results/bench/speed-<cpu kind>.json`` (the kind names the CPU's family/model and its
AVX-512, bf16, VNNI and AMX capabilities), so each figure says which CPU it holds for. To
measure a CPU without AVX-512 on one with it, cap PyTorch's kernels (ONNX Runtime is then
skipped, since it ignores the cap):

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/speed.py

Every figure is a median over repeats, measured side by side in one run, and also given as a
share of the measured matmul peak (ResNet-50 at 224 px: ~8.2 GFLOP forward, ~24.6 to train).

    python bench/speed.py                                   # ImageNet-initialised model, 224 px
    python bench/speed.py --checkpoint runs/paper-split/freeze-15/model.pt \
        --eval-checkpoint runs/cv/official-freeze-15/fold-1/model.pt \
        --eval-splits results/cv/official-freeze-15/splits.json --eval-fold 1

Speed does not depend on the trained weights, so without ``--checkpoint`` the Keras ImageNet
ResNet-50 with a fresh 3-class head is timed. ``--eval-*`` measures what the fast paths (bf16
autocast, ONNX Runtime fp32 and int8) do to accuracy on a trained model's held-out test fold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.config import portable_path  # noqa: E402
from brain_tumor.environment import describe_environment  # noqa: E402
from brain_tumor.model import forward_fp32_stem  # noqa: E402

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


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` n x n matmuls (the attainable peak, not a median)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(median_time(lambda: a @ b, 1, warmup=0) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


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
        if not bf16:
            net(x)
            return
        with torch.autocast("cpu", dtype=torch.bfloat16):
            forward_fp32_stem(net, x)  # the product's bf16 path

    return len(images) / median_time(run, repeats)


def single_image_latency(checkpoint: Path, image_path: Path, repeats: int, onnx: Path | None = None,
                         bf16: bool = False) -> dict[str, float]:
    """Milliseconds from file on disk to prediction (decode, resize, normalise, forward)."""

    from brain_tumor.model_loading import load_predictor

    predictor = load_predictor(checkpoint, "bf16" if bf16 else "fp32", "onnx" if onnx else "pytorch", onnx)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        list(predictor.predict_files([image_path]))
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def onnx_models(checkpoint: Path, calibration: np.ndarray, out_dir: Path) -> dict[str, Path]:
    """fp32 and int8 (calibrated on ``calibration``) ONNX exports of a checkpoint."""
    from brain_tumor.export import export_onnx, quantize_int8

    fp32 = export_onnx(checkpoint, out_dir / "model.onnx")
    return {"fp32": fp32, "int8": quantize_int8(fp32, out_dir / "model.int8.onnx", calibration)}


def export_throughput(logits: Callable[[np.ndarray], np.ndarray], images: torch.Tensor, repeats: int) -> float:
    """Batch img/s of an exported model's runtime (ONNX Runtime or OpenVINO: its ``logits``)."""
    batch = images.numpy()
    return len(batch) / median_time(lambda: logits(batch), repeats)


def fresh_checkpoint(out_dir: Path, image_size: int = 224) -> Path:
    """The Keras ImageNet ResNet-50 with an untrained 3-class head, saved as a checkpoint."""
    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.model import build_classifier, preprocessing_for
    from brain_tumor.training.checkpoint import save_model_checkpoint

    cfg = RunConfig()
    network = build_classifier("keras", 3, cfg.model.weights_path).eval()
    return save_model_checkpoint(out_dir / "imagenet.pt", network, architecture="resnet50-v1",
                                 class_names=["glioma", "meningioma", "pituitary"],
                                 preprocessing=preprocessing_for("keras", image_size), config=to_dict(cfg),
                                 epoch=0, metrics={})


def fast_path_accuracy(checkpoint: Path, splits_file: Path, fold: int, out_dir: Path) -> dict[str, object]:
    """Test-fold accuracy of one trained model through each inference path (int8 calibrated on
    256 of the fold's training images)."""
    from brain_tumor.data.splits import load_split
    from brain_tumor.inference import Predictor
    from brain_tumor.model_loading import load_predictor
    from brain_tumor.onnx_runtime import OnnxPredictor
    from brain_tumor.training.fit import load_data

    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)
    size = meta["preprocessing"]["image_size"]
    _, images, labels = load_data(meta["config"]["data"]["root"], size, meta["config"]["data"]["cache_dir"])
    split = load_split(splits_file, fold)  # the paper split or a CV fold
    test, train = split.test, split.train
    calibration = images[np.random.default_rng(0).choice(train, 256, replace=False)].numpy()
    models = onnx_models(checkpoint, calibration, out_dir)
    y = labels[test].numpy()
    x = images[test]

    def accuracy(logits_fn: Callable[[torch.Tensor], np.ndarray]) -> float:
        preds = np.concatenate([logits_fn(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])
        return float((preds == y).mean())

    torch_fp32 = Predictor.from_checkpoint(checkpoint)
    torch_bf16 = load_predictor(checkpoint, "bf16", "pytorch")
    ort_fp32, ort_int8 = OnnxPredictor(models["fp32"]), OnnxPredictor(models["int8"])
    result: dict[str, object] = {"checkpoint": portable_path(checkpoint), "splits": portable_path(splits_file),
                                 "fold": fold, "image_size": size, "n_test": len(test)}
    result["accuracy"] = {
        "pytorch_fp32": accuracy(lambda b: torch_fp32.logits(b).numpy()),
        "pytorch_bf16_autocast": accuracy(lambda b: torch_bf16.logits(b).numpy()),
        "onnxruntime_fp32": accuracy(lambda b: ort_fp32.logits(b.numpy())),
        "onnxruntime_int8": accuracy(lambda b: ort_int8.logits(b.numpy())),
    }
    return result


VARIANTS = (("baseline_fp32", False, False), ("fp32_channels_last", True, False),
            ("bf16_autocast_channels_last", True, True))
AUTO_TRAIN_VARIANT = {"32-true": "fp32_channels_last", "bf16-mixed": "bf16_autocast_channels_last"}


def auto_verdict(rates: dict[str, dict[str, float]], auto_name: str) -> dict[str, object]:
    """How the path ``auto`` picks compares with the fastest one measured (goal: within 10%)."""
    fastest = max(rates, key=lambda k: rates[k]["img_per_s"])
    ratio = rates[auto_name]["img_per_s"] / rates[fastest]["img_per_s"]
    return {"auto_picks": auto_name, "fastest": fastest, "auto_over_fastest": ratio, "within_10_percent": ratio >= 0.9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Model to time (default: ImageNet weights, 224 px).")
    parser.add_argument("--image", type=Path,
                        default=Path("../shared/data/figshare-cheng2015/meningioma/1.jpg"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval-checkpoint", type=Path, help="A trained model for the accuracy check.")
    parser.add_argument("--eval-splits", type=Path, help="The CV splits.json it was trained on.")
    parser.add_argument("--eval-fold", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=Path("results/bench"),
                        help="Writes speed-<cpu kind>.json here (one file per CPU kind).")
    args = parser.parse_args()
    from brain_tumor.config import RunConfig
    from brain_tumor.hardware import choose_precision, detect_cpu, resolve_engine, resolve_threads
    from brain_tumor.inference import Predictor
    from brain_tumor.onnx_runtime import OnnxPredictor
    from brain_tumor.openvino_runtime import OpenVinoPredictor, openvino_available
    from brain_tumor.training.fit import load_data

    cpu = detect_cpu()
    # ONNX Runtime picks its kernels from the CPU itself and ignores oneDNN's ISA cap, so under a
    # cap (used to measure a CPU without AVX-512 on one with it) its figures would not be that CPU's
    onnx_measurable = cpu.onednn_max_isa is None
    tmp = Path(tempfile.mkdtemp(prefix="brain-tumor-bench-"))
    checkpoint = args.checkpoint or fresh_checkpoint(tmp)
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg, size = meta["config"], meta["preprocessing"]["image_size"]
    start = time.perf_counter()
    _, images, labels = load_data(cfg["data"]["root"], size, cfg["data"]["cache_dir"])
    cache_seconds = time.perf_counter() - start
    images, labels = images[:512], labels[:512]
    # emulated bf16 matmuls are slow enough that a smaller one says as much
    native = cpu.native_bf16
    peak = {"fp32": matmul_peak(torch.float32),
            "bf16": matmul_peak(torch.bfloat16, n=4096 if native else 1024, repeats=5 if native else 2)}
    print("peak GFLOP/s", {k: round(v) for k, v in peak.items()}, flush=True)
    scale = (size / 224) ** 2  # FLOPs scale with pixels
    precision = choose_precision("auto", "cpu")
    out: dict[str, object] = {"cpu": cpu.describe(),
                              "checkpoint": str(args.checkpoint or "ImageNet weights + untrained head"),
                              "image_size": size, "peak_gflops": peak, "dataset_cache_load_seconds": cache_seconds,
                              "threads": resolve_threads().describe(), "auto_precision": precision.describe()}
    train = {}
    for name, cl, bf in VARIANTS:
        slow = bf and not cpu.native_bf16  # emulated bf16: a handful of steps say enough
        rate = training_throughput(cfg["model"]["weights"], RunConfig().model.weights_path, images, labels,
                                   channels_last=cl, bf16=bf, batch=32, repeats=1 if slow else args.repeats)
        ceiling = (peak["bf16"] if bf else peak["fp32"]) / (TRAIN_GFLOP * scale)
        train[name] = {"img_per_s": rate, "share_of_peak": None if slow else rate / ceiling}
        print(name, "train", round(rate, 2), flush=True)
    out["training_batch32_freeze30"] = train
    out["training_auto"] = auto_verdict(train, AUTO_TRAIN_VARIANT[precision.precision])
    predictor = Predictor.from_checkpoint(checkpoint)
    infer = {}
    for name, cl, bf in VARIANTS:
        slow = bf and not cpu.native_bf16
        rate = inference_throughput(predictor.network, predictor.normalize, images[:16 if slow else 64],
                                    channels_last=cl, bf16=bf, repeats=1 if slow else args.repeats)
        ceiling = (peak["bf16"] if bf else peak["fp32"]) / (FWD_GFLOP * scale)
        infer[name] = {"img_per_s": rate, "share_of_peak": None if slow else rate / ceiling}
        print(name, "infer", round(rate, 2), flush=True)
    models: dict[str, Path] = {}
    if onnx_measurable:
        models = onnx_models(checkpoint, images[256:512].numpy(), tmp)
        for name, path in models.items():
            rate = export_throughput(OnnxPredictor(path).logits, images[:64], args.repeats)
            infer[f"onnxruntime_{name}"] = {"img_per_s": rate,
                                            "share_of_fp32_peak": rate / (peak["fp32"] / (FWD_GFLOP * scale))}
            print(f"onnxruntime_{name}", "infer", round(rate, 2), flush=True)
        if openvino_available():  # OpenVINO over the fp32 export: its own precision choice, then held to f32
            for name, hint in (("openvino_fp32_export", None), ("openvino_fp32_export_hint_f32", "f32")):
                rate = export_throughput(OpenVinoPredictor(models["fp32"], precision_hint=hint).logits,
                                         images[:64], args.repeats)
                infer[name] = {"img_per_s": rate, "share_of_fp32_peak": rate / (peak["fp32"] / (FWD_GFLOP * scale))}
                print(name, "infer", round(rate, 2), flush=True)
    else:
        out["onnxruntime"] = f"not measured: oneDNN capped at {cpu.onednn_max_isa}, which ONNX Runtime ignores"
    out["inference_batch64"] = infer
    exports = [str(models[k]) if k in models else None for k in ("int8", "fp32")]
    engine = resolve_engine("auto", precision, *exports, cpu, openvino_available())
    auto_infer = {"onnx": f"onnxruntime_{engine.precision}", "openvino": "openvino_fp32_export"}.get(
        engine.engine, AUTO_TRAIN_VARIANT.get(engine.precision, ""))
    out["inference_auto"] = {**auto_verdict(infer, auto_infer), "with": "the ONNX exports present" if models
                             else "no ONNX export (PyTorch only)"}
    if not onnx_measurable:  # what auto picks when the model has no export: PyTorch at its precision
        torch_only = {k: v for k, v in infer.items() if not k.startswith("onnxruntime")}
        out["inference_auto"] = {**auto_verdict(torch_only, AUTO_TRAIN_VARIANT[precision.precision]),
                                 "with": "no ONNX export (PyTorch only)"}
    latency = {"pytorch_fp32": single_image_latency(checkpoint, args.image, 20),
               "pytorch_bf16_autocast": single_image_latency(checkpoint, args.image, 20, bf16=True)}
    if models:
        latency["onnxruntime_fp32"] = single_image_latency(checkpoint, args.image, 20, onnx=models["fp32"])
        latency["onnxruntime_int8"] = single_image_latency(checkpoint, args.image, 20, onnx=models["int8"])
    out["single_image_latency_ms"] = {**latency, "includes": "read file, decode, resize, normalise, forward, softmax"}
    print(json.dumps(out["single_image_latency_ms"]), flush=True)
    base_t, base_i = train["baseline_fp32"]["img_per_s"], infer["baseline_fp32"]["img_per_s"]
    out["ratios_vs_baseline_fp32"] = {"training": {k: v["img_per_s"] / base_t for k, v in train.items()},
                                      "inference": {k: v["img_per_s"] / base_i for k, v in infer.items()}}
    if args.eval_checkpoint and args.eval_splits and onnx_measurable:
        out["fast_path_accuracy"] = fast_path_accuracy(args.eval_checkpoint, args.eval_splits, args.eval_fold, tmp)
        print(json.dumps(out["fast_path_accuracy"]), flush=True)
    out["environment"] = {**describe_environment(), "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                          "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY")}
    output = args.output_dir / f"speed-{cpu.kind()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(out, indent=2))
    tmp_out.replace(output)
    print(json.dumps({k: v for k, v in out.items() if k != "environment"}, indent=2))
    print("->", output)


if __name__ == "__main__":
    main()
