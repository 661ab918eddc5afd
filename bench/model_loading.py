"""How long a model takes to load and give its first answer, per engine: what a user waits for at
every ``brain-tumor predict`` and every start of ``serve``.

Each repeat runs in a fresh Python process (nothing cached in memory; the files in the OS page
cache after the first), timing the imports, ``load_predictor`` (checkpoint or package, exports,
engine) and the first answer on one slice. Run it with the code to measure on ``PYTHONPATH``
(e.g. two worktrees, before and after a change), training paused.

    python bench/model_loading.py runs/recommended/package --slice scan.jpg --label after \\
        --output results/bench/model-loading-CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from brain_tumor.data.imageio import read_slice
from brain_tumor.model_loading import load_predictor
from brain_tumor.batched import predict_slices
t1 = time.perf_counter()
predictor = load_predictor(sys.argv[1], engine=sys.argv[2])
t2 = time.perf_counter()
answer = predict_slices(predictor, [read_slice(sys.argv[3])])[0]
t3 = time.perf_counter()
engine = predictor.compute["engine"]
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1, "first_answer_s": t3 - t2,
                  "engine": engine["engine"], "precision": engine["precision"], "answer": answer.predicted}))
"""


def time_once(model: str, engine: str, slice_path: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, model, engine, slice_path], check=True,
                         capture_output=True, text=True)  # the child inherits PYTHONPATH: the code measured
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a checkpoint or model package (what -m takes)")
    parser.add_argument("--slice", required=True, help="one image to answer")
    parser.add_argument("--engines", nargs="+", default=["auto", "onnx", "openvino", "pytorch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", required=True, help="which code this is (e.g. before / after)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    from brain_tumor.atomic import write_text
    from brain_tumor.config import portable_path
    from brain_tumor.environment import describe_environment

    rows = {}
    for engine in args.engines:
        runs = [time_once(args.model, engine, args.slice) for _ in range(args.repeats)]
        rows[engine] = {"runs": runs, **{f"median_{k}": round(statistics.median(float(r[k]) for r in runs), 2)  # type: ignore[arg-type]
                                         for k in ("imports_s", "load_s", "first_answer_s")}}
        print(engine, {k: v for k, v in rows[engine].items() if k != "runs"}, runs[0]["engine"], runs[0]["precision"])
    result = {"label": args.label, "model": portable_path(args.model), "slice": Path(args.slice).name,
              "repeats": args.repeats,
              "engines": rows, "environment": describe_environment()}
    write_text(args.output / f"{args.label}.json", json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
