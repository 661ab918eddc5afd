#!/bin/bash
# Build the recommended model package from one fold model of a patient-wise CV:
# its OOD bank, its "no tumour" gate, the CV's out-of-fold calibration, ONNX exports (fp32 for
# OpenVINO, int8 calibrated on that fold's training slices) and the package with its model card.
#
#   scripts/build_recommended_model.sh CV_RESULTS CV_WORK FOLD OUT
#   e.g. scripts/build_recommended_model.sh results/cv/official-freeze-15-bf16-e8-224-adamw-cosine-ls0.1 \
#        runs/cv/official-freeze-15-bf16-e8-224-adamw-cosine-ls0.1 1 runs/recommended
#
# Needs: the fold's model.pt (CV_WORK/fold-FOLD), the CV's splits.json (CV_RESULTS), and its
# calibration (brain-tumor calibrate CV_RESULTS --work-dir CV_WORK --output runs/calibration/NAME,
# or results/calibration/NAME; CALIBRATION=FILE to name another); SHORTCUT=FILE adds a shortcut.json
# from brain-tumor shortcut-test that holds this model; MODEL_CARD=FILE replaces the generated model
# card. It also writes gate.json, calibration.json (and shortcut.json) beside the fold's model.pt,
# where predict and serve find them. Writes OUT/package (the model package), OUT/gate and OUT/ood
# (what the gate and the OOD flag measured). About 22 minutes on 2 CPU cores. A rebuilt fold model has
# other weights than the one measured in results/recommended/: measure it again (brain-tumor evaluate).
set -euo pipefail
cv=$1; work=$2; fold=$3; out=$4
bt=${BRAIN_TUMOR:-brain-tumor}
command -v "$bt" >/dev/null || { echo "error: $bt not found (activate the venv, or BRAIN_TUMOR=.venv/bin/brain-tumor)" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$(dirname "$(command -v "$bt")")/python}
name=$(basename "$cv")
model=$work/fold-$fold/model.pt
calibration=${CALIBRATION:-$repo/results/calibration/$name/calibration.json}
[ -f "$model" ] || { echo "error: $model: no such fold model" >&2; exit 2; }
[ -f "$calibration" ] || { echo "error: $calibration: no calibration (run brain-tumor calibrate first)" >&2; exit 2; }
mkdir -p "$out"
echo "$(date -u +%FT%TZ) OOD bank of $model"
$bt ood -m "$model" --split "$cv/splits.json" --fold "$fold" --output "$out/ood"
echo "$(date -u +%FT%TZ) no-tumour gate"
$bt no-tumour-gate -m "$model" --split "$cv/splits.json" --fold "$fold" --output "$out/gate"
cp "$out/gate/gate.json" "$(dirname "$model")/gate.json"
cp "$calibration" "$(dirname "$model")/calibration.json"
# the shortcut benchmark's entry for this model, if one was run (the model card quotes it)
[ -n "${SHORTCUT:-}" ] && cp "$SHORTCUT" "$(dirname "$model")/shortcut.json"
echo "$(date -u +%FT%TZ) int8 calibration slices: 256 of the fold's training slices"
rm -rf "$out/int8-calibration"  # never slices of another fold or model
"$python" - "$model" "$cv/splits.json" "$fold" "$out/int8-calibration" <<'PY'
import random, sys
from pathlib import Path
from brain_tumor.data.splits import load_split
from brain_tumor.training.checkpoint import load_checkpoint
from brain_tumor.training.fit import load_data
model, splits, fold, dest = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
data = (load_checkpoint(model).config or {})["data"]  # the data it was trained on, indexed as the split is
records, _, _ = load_data(data["root"], int(data["image_size"]), data.get("cache_dir"), data.get("preprocessing", "paper"))
train = sorted(load_split(splits, fold).train)
dest.mkdir(parents=True)
for i in random.Random(0).sample(train, min(256, len(train))):
    (dest / f"{i}{Path(records[i].path).suffix}").symlink_to(records[i].path)
PY
echo "$(date -u +%FT%TZ) ONNX exports and package"
$bt export -m "$model" --int8-calibration "$out/int8-calibration" --package "$out/package" \
  ${MODEL_CARD:+--model-card "$MODEL_CARD"}
echo "$(date -u +%FT%TZ) done: $out/package"
