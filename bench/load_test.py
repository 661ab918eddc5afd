"""Load test of `brain-tumor serve` on 127.0.0.1 only: N requests at each concurrency (default 1,
8 and 32), latency percentiles, errors and the server's memory (RSS) under load; `/explain`
latency alone (one client); and, once the server is stopped, the batch path on the same machine
(the same predictor, batch 64, in-process) as the ceiling the service is measured against.

The clients run on the same cores as the server (each thread keeps one HTTP/1.1 connection open,
as a PACS router would); their CPU time is recorded so their share of the machine is known.

    python bench/load_test.py --checkpoint runs/cv/NAME/fold-1/model.pt \
        --image ../shared/data/figshare-cheng2015/glioma/1841.jpg    # -> results/bench/load_test-<cpu kind>.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.atomic import write_json  # noqa: E402
from brain_tumor.config import portable_path  # noqa: E402
from brain_tumor.cpu_capabilities import detect_cpu  # noqa: E402
from brain_tumor.environment import describe_environment  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("server did not start")


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process now and at its peak (Linux /proc), in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[key].split()[0]) / 1024 for name, key in (("now", "VmRSS"), ("peak", "VmHWM"))}


def run(url: str, payload: bytes, name: str, requests: int, concurrency: int,
        explain: bool = False) -> dict[str, object]:
    endpoint = url + "v1/predict" + ("?explain=true" if explain else "")
    local = threading.local()

    def one(_: int) -> tuple[float, int]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
        start = time.perf_counter()
        try:
            status = client.post(endpoint, files={"file": (name, payload)}).status_code
        except httpx.HTTPError:
            status = -1
        return time.perf_counter() - start, status

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latency = np.array([t for t, _ in results]) * 1000
    errors = sum(s != 200 for _, s in results)
    return {"requests": requests, "concurrency": concurrency, "errors": errors, "wall_seconds": wall,
            "throughput_rps": requests / wall, "latency_ms": {q: float(np.percentile(latency, int(q[1:])))
                                                               for q in ("p50", "p95", "p99")},
            "latency_ms_max": float(latency.max()), "client_cpu_share_of_one_core": (time.process_time() - cpu) / wall}


def batch_path(checkpoint: Path, image: Path, batch: int = 64, repeats: int = 5) -> dict[str, object]:
    """The same model on the batch path, in-process: decode once, then batches of ``batch`` copies."""
    from brain_tumor.data.imageio import read_slice
    from brain_tumor.model_loading import load_predictor

    predictor = load_predictor(checkpoint)
    tensor = predictor.to_tensor(read_slice(image))
    images = tensor[None].repeat(batch, 1, 1, 1)
    predictor.predict_batch(images[:8], ["warm-up"] * 8)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_batch(images, ["x"] * batch)
        seconds.append(time.perf_counter() - start)
    engine = dict(predictor.compute["engine"])
    if engine.get("onnx_path"):
        engine["onnx_path"] = portable_path(engine["onnx_path"])
    return {"batch": batch, "img_per_s": batch / float(np.median(seconds)), "engine": engine,
            "includes": "forward pass, softmax and the answer of an already decoded batch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--explain-requests", type=int, default=20, help="/predict?explain=true, one client; 0: skip")
    parser.add_argument("--output", type=Path, help="default results/bench/load_test-<cpu kind>.json")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="Extra argument for brain-tumor serve, e.g. --serve-arg=--engine=pytorch; repeatable.")
    args = parser.parse_args()
    output = args.output or Path("results/bench") / f"load_test-{detect_cpu().describe()['kind']}.json"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "brain_tumor", "serve", "--checkpoint", str(args.checkpoint),
                               "--host", "127.0.0.1", "--port", str(port), *args.serve_arg], env=os.environ.copy())
    levels, explain = [], None
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(url)
        compute = httpx.get(url + "v1/health", timeout=10).json()["compute"]
        payload = args.image.read_bytes()
        run(url, payload, args.image.name, 16, 2)  # warm-up
        idle = rss_mb(server.pid)
        for concurrency in args.concurrency:
            before = httpx.get(url + "v1/ready", timeout=10).json()
            level = run(url, payload, args.image.name, args.requests, concurrency)
            after = httpx.get(url + "v1/ready", timeout=10).json()  # micro-batches and images served
            batches = after["batches"] - before["batches"]
            level.update(mean_batch_size=(after["images"] - before["images"]) / max(batches, 1),
                         server_rss_mb=rss_mb(server.pid))
            levels.append(level)
            print(json.dumps({k: level[k] for k in ("concurrency", "errors", "throughput_rps", "latency_ms",
                                                    "mean_batch_size")}), flush=True)
        if args.explain_requests:
            explain = run(url, payload, args.image.name, args.explain_requests, 1, explain=True)
    finally:
        server.terminate()
        server.wait(10)
    engine = compute.get("engine") or {}
    if engine.get("onnx_path"):  # the service reports where its export lies; results name no machine's folders
        engine["onnx_path"] = portable_path(engine["onnx_path"])
    result = {"levels": levels, "explain_alone": explain, "server_rss_mb_idle": idle,
              "batch_path": batch_path(args.checkpoint, args.image), "image": args.image.name,
              "image_bytes": len(payload), "checkpoint": portable_path(args.checkpoint),
              "includes": "upload, decode, resize, micro-batched predict, JSON answer (no image)",
              "serve_args": args.serve_arg, "compute": compute, "environment": describe_environment()}
    write_json(result, output)
    print(f"batch path {result['batch_path']['img_per_s']:.1f} img/s -> {output}")


if __name__ == "__main__":
    main()
