"""Load test of `brain-tumor serve` on 127.0.0.1 only: N requests, C concurrent, latency percentiles.

    python bench/load_test.py --checkpoint runs/paper-split/freeze-15/model.pt \
        --image ../shared/data/figshare-cheng2015/glioma/1841.jpg --requests 500 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from brain_tumor.atomic import write_json  # noqa: E402
from brain_tumor.config import portable_path  # noqa: E402
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


def run(url: str, payload: bytes, name: str, requests: int, concurrency: int,
        explain: bool = False) -> dict[str, object]:
    endpoint = url + "v1/predict" + ("?explain=true" if explain else "")

    def one(_: int) -> tuple[float, int]:
        start = time.perf_counter()
        try:
            r = httpx.post(endpoint, files={"file": (name, payload)}, timeout=120)
            status = r.status_code
        except httpx.HTTPError:
            status = -1
        return time.perf_counter() - start, status

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latency = np.array([t for t, _ in results]) * 1000
    errors = sum(s != 200 for _, s in results)
    return {"requests": requests, "concurrency": concurrency, "errors": errors, "wall_seconds": wall,
            "throughput_rps": requests / wall, "latency_ms": {q: float(np.percentile(latency, int(q[1:])))
                                                               for q in ("p50", "p95", "p99")},
            "latency_ms_max": float(latency.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("results/bench/load_test.json"))
    parser.add_argument("--explain", action="store_true", help="Ask for Grad-CAM with every prediction.")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="Extra argument for brain-tumor serve, e.g. --serve-arg=--engine=pytorch; repeatable.")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "brain_tumor", "serve", "--checkpoint", str(args.checkpoint),
                               "--host", "127.0.0.1", "--port", str(port), *args.serve_arg], env=os.environ.copy())
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(url)
        compute = httpx.get(url + "v1/health", timeout=10).json()["compute"]
        payload = args.image.read_bytes()
        run(url, payload, args.image.name, 8, 2, args.explain)  # warm-up
        result = run(url, payload, args.image.name, args.requests, args.concurrency, args.explain)
        result["server"] = httpx.get(url + "v1/ready", timeout=10).json()  # micro-batches and images served
    finally:
        server.terminate()
        server.wait(10)
    parts = "upload, decode, resize, micro-batched predict" + (", Grad-CAM, PNG encoding" if args.explain else "")
    engine = compute.get("engine") or {}
    if engine.get("onnx_path"):  # the service reports where its export lies; results name no machine's folders
        engine["onnx_path"] = portable_path(engine["onnx_path"])
    result.update({"image": args.image.name, "image_bytes": len(payload), "checkpoint": portable_path(args.checkpoint),
                   "includes": parts, "serve_args": args.serve_arg, "compute": compute,
                   "environment": describe_environment()})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.output)
    print(json.dumps({k: result[k] for k in ("errors", "throughput_rps", "latency_ms")}, indent=2))


if __name__ == "__main__":
    main()
