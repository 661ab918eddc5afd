"""Every input of the bad-input corpus (tests/corpus.py) against the library, the CLI and the
service: outcome, message, time and peak memory; then 100 bomb uploads against one server.

    python bench/bad_inputs.py            # -> results/robustness/bad-inputs/{bad_inputs.json,.md}

Library and CLI run each input in a fresh process, so the peak memory (``ru_maxrss``) is that
input's; it is given above the same process's idle peak (imports and, for the CLI, the model).
The service is one ``brain-tumor serve`` on 127.0.0.1; its resident memory (VmRSS) and peak
(VmHWM) are read from /proc after each upload.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from tests.corpus import make_corpus  # noqa: E402

LIBRARY = """
import json, resource, sys, time
from brain_tumor.data.imageio import ImageReadError, read_slice
idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    read_slice(sys.argv[1], frame=0 if sys.argv[2] == "1" else None)
    outcome, message = "ok", ""
except ImageReadError as exc:
    outcome, message = "error", str(exc)
print(json.dumps({"outcome": outcome, "message": message, "seconds": time.perf_counter() - start,
                  "peak_mb_above_idle": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - idle) / 1024}))
"""

CLI = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)
print(json.dumps({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def tiny_model(out: Path, size: int = 224) -> Path:
    import torch

    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.model import build_classifier, preprocessing_for
    from brain_tumor.training.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    return save_model_checkpoint(out, build_classifier("none", 3).eval(), architecture="resnet50-v1",
                                 class_names=["glioma", "meningioma", "pituitary"],
                                 preprocessing=preprocessing_for("keras", size), config=to_dict(RunConfig()),
                                 epoch=0, metrics={})


def run_json(code: str, *args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_rows(corpus: dict, model: Path) -> dict[str, dict[str, object]]:  # type: ignore[type-arg]
    exe = str(Path(sys.executable).with_name("brain-tumor"))
    idle = run_json(CLI, exe, "predict", str(corpus["good_jpg"].path), "-m", str(model))
    rows = {}
    for name, entry in corpus.items():
        r = run_json(CLI, exe, "predict", str(entry.path), "-m", str(model))
        text = str(r["stdout"]) + str(r["stderr"])
        errors = [line for line in str(r["stderr"]).splitlines() if line.startswith(("error", "skipped"))]
        rows[name] = {"rc": r["rc"], "outcome": "ok" if r["rc"] == 0 and not errors else "error",
                      "message": errors[0] if errors else "", "traceback": "Traceback" in text,
                      "seconds": r["seconds"], "peak_mb": float(r["peak_mb"]),
                      "peak_mb_above_good_jpg": float(r["peak_mb"]) - float(idle["peak_mb"])}
        print("cli", name, rows[name]["outcome"], flush=True)
    return rows


def service_rows(corpus: dict, model: Path, bombs: int) -> tuple[dict[str, dict[str, object]], dict[str, object]]:  # type: ignore[type-arg]
    port = free_port()
    exe = str(Path(sys.executable).with_name("brain-tumor"))
    server = subprocess.Popen([exe, "serve", "-m", str(model), "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        httpx.post(url + "/v1/predict", files={"file": ("x", corpus["good_jpg"].path.read_bytes())}, timeout=120)
        idle = memory_mb(server.pid)
        rows = {}
        for name, entry in corpus.items():
            if not entry.path.is_file():
                continue
            start = time.perf_counter()
            r = httpx.post(url + "/v1/predict", files={"file": ("upload", entry.path.read_bytes())}, timeout=300)
            seconds = time.perf_counter() - start
            healthy = httpx.get(url + "/v1/health", timeout=10).status_code == 200
            mem = memory_mb(server.pid)
            body = r.json()
            rows[name] = {"status": r.status_code, "message": body.get("detail", "") if r.status_code >= 400 else "",
                          "seconds": seconds, "healthy_after": healthy, "rss_mb": mem["VmRSS"],
                          "peak_mb_above_idle": mem["VmHWM"] - idle["VmRSS"]}
            print("service", name, r.status_code, flush=True)
        before = memory_mb(server.pid)
        names = ["mat_bomb", "dicom_bomb", "dicom_deflated_bomb", "png_bomb", "mat_huge_pid"]
        statuses = set()
        for i in range(bombs):
            entry = corpus[names[i % len(names)]]
            statuses.add(httpx.post(url + "/v1/predict", files={"file": ("b", entry.path.read_bytes())},
                                    timeout=300).status_code)
        after = memory_mb(server.pid)
        soak = {"uploads": bombs, "kinds": names, "statuses": sorted(statuses), "rss_mb_before": before["VmRSS"],
                "rss_mb_after": after["VmRSS"], "growth": after["VmRSS"] / before["VmRSS"] - 1,
                "healthy_after": httpx.get(url + "/v1/health", timeout=10).status_code == 200}
        return rows, soak
    finally:
        server.terminate()
        server.wait(timeout=30)


def markdown(result: dict) -> str:  # type: ignore[type-arg]
    lines = ["| input | what | expected | library | CLI | service | lib ms | lib MB | CLI peak MB | service MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["corpus"].items():
        lib, cli, svc = result["library"][name], result["cli"][name], result["service"].get(name, {})
        lines.append(f"| {name} | {entry['why']} | {entry['expect']} | {lib['outcome']} | {cli['outcome']} "
                     f"| {svc.get('status', '-')} | {1000 * lib['seconds']:.0f} | {lib['peak_mb_above_idle']:.0f} "
                     f"| {cli['peak_mb']:.0f} | {svc.get('peak_mb_above_idle', float('nan')):.0f} |")
    s = result["soak"]
    growth = f"{100 * s['growth']:+.1f}%"
    lines += ["", f"{s['uploads']} bomb uploads ({', '.join(s['kinds'])}): statuses {s['statuses']}, server RSS "
                  f"{s['rss_mb_before']:.0f} MB before and {s['rss_mb_after']:.0f} MB after ({growth}), "
                  f"healthy after: {s['healthy_after']}.",
              "", "lib MB: peak resident memory of a fresh process reading the input, above its peak after the "
                  "imports. "
                  "CLI peak MB: peak resident memory of a whole `brain-tumor predict FILE` process (torch and the "
                  "model included). service MB: the server's peak resident memory (cumulative, VmHWM) above its "
                  "resident memory after one warm-up prediction. Service `-`: not a file, nothing to upload."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("results/robustness/bad-inputs"))
    parser.add_argument("--bombs", type=int, default=100)
    args = parser.parse_args()
    from brain_tumor.environment import describe_environment

    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "corpus")
        model = tiny_model(Path(tmp) / "model.pt")
        library = {}
        for name, entry in corpus.items():
            library[name] = run_json(LIBRARY, str(entry.path), "1" if name == "dicom_multiframe" else "0")
            library[name]["message"] = str(library[name]["message"]).replace(tmp, "<tmp>")
            print("library", name, library[name]["outcome"], flush=True)
        cli = cli_rows(corpus, model)
        service, soak = service_rows(corpus, model, args.bombs)
        for rows in (cli, service):
            for row in rows.values():
                row["message"] = str(row["message"]).replace(tmp, "<tmp>")
        result = {"corpus": {n: {"expect": e.expect, "why": e.why} for n, e in corpus.items()},
                  "library": library, "cli": cli, "service": service, "soak": soak,
                  "model": "untrained ResNet-50 at 224 px (memory and time do not depend on the weights)",
                  "environment": describe_environment()}
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in (("bad_inputs.json", json.dumps(result, indent=2)), ("bad_inputs.md", markdown(result))):
        tmp_file = args.output / (name + ".tmp")
        tmp_file.write_text(text)
        tmp_file.replace(args.output / name)
    print(markdown(result))


if __name__ == "__main__":
    main()
