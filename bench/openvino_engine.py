"""Is OpenVINO, Intel's CPU inference engine, faster than the ONNX Runtime paths `--engine auto`
picks from? One trained model, exported once to ONNX (fp32, and int8 QDQ calibrated on 256 of its
training slices, as `brain-tumor export --int8-calibration` does); each engine runs the same
files on the same cores: batch-64 throughput, batch-1 latency (forward only), and accuracy on the
model's own held-out fold, so a faster path that answers differently shows.

OpenVINO is not a dependency of the tool (`pip install openvino` to run this). Its CPU plugin
runs fp32 graphs in bf16 by default where the CPU has native bf16 (AMX/AVX512_BF16); both its
default and `INFERENCE_PRECISION_HINT=f32` are measured.

    pip install openvino
    python bench/openvino_engine.py runs/cv/NAME/fold-3/model.pt results/cv/NAME/splits.json --fold 3
    # -> results/bench/openvino-<cpu kind>.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from speed import median_time  # noqa: E402  (bench/speed.py: this script's folder is on the path)

from brain_tumor.atomic import write_json  # noqa: E402
from brain_tumor.config import portable_path  # noqa: E402
from brain_tumor.cpu_capabilities import detect_cpu  # noqa: E402
from brain_tumor.data.splits import load_split  # noqa: E402
from brain_tumor.environment import describe_environment  # noqa: E402
from brain_tumor.export import export_onnx, quantize_int8  # noqa: E402
from brain_tumor.onnx_runtime import OnnxPredictor  # noqa: E402
from brain_tumor.openvino_runtime import OpenVinoPredictor  # noqa: E402
from brain_tumor.training.checkpoint import load_checkpoint  # noqa: E402
from brain_tumor.training.fit import load_data  # noqa: E402

Logits = Callable[[np.ndarray], np.ndarray]  # uint8 [B, 1, S, S] -> logits


def engines(models: dict[str, Path], threads: int) -> dict[str, Logits]:
    """Each engine over the same exports, as the tool runs them (OpenVINO: one request on every
    thread, the LATENCY hint; see brain_tumor.openvino_runtime)."""
    out: dict[str, Logits] = {f"onnxruntime_{k}": OnnxPredictor(p, threads).logits for k, p in models.items()}
    for kind, path in models.items():
        out[f"openvino_{kind}"] = OpenVinoPredictor(path, threads).logits
    out["openvino_fp32_hint_f32"] = OpenVinoPredictor(models["fp32"], threads, "f32").logits
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("splits", type=Path, help="the CV splits.json (or split file) the model was trained on")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import openvino as ov

    cpu = detect_cpu().describe()
    output = args.output or Path("results/bench") / f"openvino-{cpu['kind']}.json"
    checkpoint = load_checkpoint(args.checkpoint)
    data = (checkpoint.config or {}).get("data") or {}
    _, images, labels = load_data(data["root"], checkpoint.preprocessing.image_size, data.get("cache_dir"),
                                  data.get("preprocessing", "paper"))
    split = load_split(args.splits, args.fold)
    chosen = np.random.default_rng(0).choice(split.train, min(256, len(split.train)), replace=False)
    calibration = images[chosen].numpy()
    x, y = images[split.test].numpy(), labels[split.test].numpy()
    batch64 = x[:64]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(args.checkpoint, Path(tmp) / "model.onnx")
        models = {"fp32": fp32, "int8": quantize_int8(fp32, Path(tmp) / "model.int8.onnx", calibration)}
        throughput, accuracy, latency_ms = {}, {}, {}
        for name, fn in engines(models, args.threads).items():
            throughput[name] = len(batch64) / median_time(lambda fn=fn: fn(batch64), args.repeats, warmup=2)
            latency_ms[name] = 1000 * median_time(lambda fn=fn: fn(x[:1]), 5 * args.repeats, warmup=2)
            predicted = np.concatenate([fn(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])
            accuracy[name] = float((predicted == y).mean())
            print(f"{name}: {throughput[name]:.1f} img/s, {latency_ms[name]:.1f} ms, accuracy {accuracy[name]:.4f}",
                  flush=True)
    fastest = max(throughput, key=throughput.__getitem__)
    result = {"checkpoint": portable_path(args.checkpoint), "fold": args.fold, "n_test": len(y),
              "threads": args.threads, "openvino": ov.__version__, "cpu": cpu,
              "throughput_img_per_s_batch64": throughput, "latency_ms_batch1_forward": latency_ms,
              "accuracy_held_out_fold": accuracy, "fastest": fastest,
              "fastest_onnxruntime": max((k for k in throughput if k.startswith("onnxruntime")),
                                         key=throughput.__getitem__),
              "environment": describe_environment()}
    write_json(result, output)
    print(f"fastest {fastest} -> {output}")


if __name__ == "__main__":
    main()
