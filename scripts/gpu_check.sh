#!/usr/bin/env bash
# The GPU measurement of issue 16 in one run (about 6-8 minutes on a recent NVIDIA card): the Stable
# Diffusion path on a random-weight pipeline with SD 2.1-base's real shapes. Writes under $OUT:
#   environment.txt           nvidia-smi and torch's view of the machine
#   doctor_<precision>.out    `doctor --device cuda --model M --precision P --json` (fp16 and bf16): JSON
#   bench_<name>.out          `bench step` at 64²: the torch hash grid in fp16, then with channels-last: JSON
#   generate.out              a 1000-step `generate --guidance sd`: wall time, peak memory, mesh (JSON);
#                             generate_metrics.json and generate_mesh.glb are the run's own files
#   summary.out               the goals: step/floor <= 1.15 at 64² fp16, 5000 steps < 6 min, peak < 8 GB
#   times.txt, failed.txt     seconds per step; the steps that failed (each keeps its <name>.err)
# Run from the repository root with a CUDA torch in .venv:   OUT=/tmp/gpu scripts/gpu_check.sh
# Every step runs even if one before it failed. On the CPU with tiny shapes (tests/test_gpu_check.py):
#   OUT=/tmp/x DREAMTIME_GPU_CHECK_SHAPE=tiny DREAMTIME_GPU_CHECK_DEVICE=cpu DREAMTIME_GPU_CHECK_PRECISIONS=bf16 \
#   DREAMTIME_GPU_CHECK_STEPS=4 DREAMTIME_GPU_CHECK_RESOLUTION=32 DREAMTIME_GPU_CHECK_BENCH_STEPS=2 \
#   DREAMTIME_GPU_CHECK_GENERATE_FLAGS="--resolution 32 --mesh-resolution 48 --preview-every 0 --sdf-after 1" scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
SHAPE=${DREAMTIME_GPU_CHECK_SHAPE:-sd21-base}
DEVICE=${DREAMTIME_GPU_CHECK_DEVICE:-cuda}
PRECISIONS=${DREAMTIME_GPU_CHECK_PRECISIONS:-fp16 bf16}
STEPS=${DREAMTIME_GPU_CHECK_STEPS:-1000}
RESOLUTION=${DREAMTIME_GPU_CHECK_RESOLUTION:-64}
BENCH_STEPS=${DREAMTIME_GPU_CHECK_BENCH_STEPS:-10}
GENERATE_FLAGS=${DREAMTIME_GPU_CHECK_GENERATE_FLAGS:-}
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BENCH_PRECISION=${PRECISIONS%% *}  # the first of them: fp16 on a GPU
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dreamtime-gpu-check-XXXXXX")  # the model (2.6 GB) stays out of $OUT
trap 'rm -rf "$WORK"' EXIT

step() {  # step NAME COMMAND...: stdout to $OUT/NAME.out, stderr to $OUT/NAME.err, "NAME SECONDS" to $OUT/times.txt
  local name=$1 start status=0
  shift
  start=$(date +%s%N)
  "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || status=$?
  [ "$status" = 0 ] || echo "$name exit $status" >> "$OUT/failed.txt"
  echo "$name $(( ($(date +%s%N) - start) / 1000000 ))e-3" >> "$OUT/times.txt"
}

{ nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'; } \
  > "$OUT/environment.txt"
MODEL="$WORK/model"
step make_model "$PY" -m backend make-model --shape "$SHAPE" --out "$MODEL"
for precision in $PRECISIONS; do
  step "doctor_$precision" "$PY" -m backend doctor --device "$DEVICE" --model "$MODEL" --precision "$precision" --json
done
BENCH=("$PY" -m backend bench step --guidance sd --model "$MODEL" --device "$DEVICE" --precision "$BENCH_PRECISION"
       --resolution "$RESOLUTION" --encoding hashgrid --hashgrid-implementation torch --steps "$BENCH_STEPS" --warmup 3)
step bench_torch_grid "${BENCH[@]}"
step bench_channels_last "${BENCH[@]}" --extra '{"channels_last": true}'
RUN="$WORK/run"
# shellcheck disable=SC2086  # GENERATE_FLAGS is a list of flags
step generate_run "$PY" -m backend generate "a red cube" --guidance sd --model "$MODEL" --device "$DEVICE" \
  --precision "$BENCH_PRECISION" --steps "$STEPS" --run-dir "$RUN" --quiet $GENERATE_FLAGS
step generate "$PY" - "$RUN" "$OUT/times.txt" <<'PYTHON'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
metrics = json.loads((run / "metrics.json").read_text())
times = dict(line.split() for line in Path(sys.argv[2]).read_text().splitlines())
step_s = sorted(metrics["step_s"])
print(json.dumps({
    "wall_s": float(times["generate_run"]), "steps": len(metrics["step"]), "train_s": metrics["train_s"], "total_s": metrics["total_s"],
    "mesh_s": metrics.get("mesh_s"), "median_step_s": step_s[len(step_s) // 2], "peak_mem_mb": metrics["peak_mem_mb"],
    "peak_mem_kind": metrics["peak_mem_kind"], "mesh": metrics.get("mesh"), "skipped_steps": len(metrics["skipped_steps"]),
    "guidance_non_finite_steps": len(metrics["guidance_non_finite"]), "mesh_glb_bytes": (run / "mesh.glb").stat().st_size,
}))
PYTHON
cp "$RUN/metrics.json" "$OUT/generate_metrics.json" 2>/dev/null
cp "$RUN/mesh.glb" "$OUT/generate_mesh.glb" 2>/dev/null
step summary "$PY" - "$OUT" "$BENCH_PRECISION" <<'PYTHON'
import json, sys
from pathlib import Path
out, precision = Path(sys.argv[1]), sys.argv[2]


def read(name):
    try:
        return json.loads((out / f"{name}.out").read_text())
    except (OSError, ValueError):
        return None


bench, generate, goals = read("bench_torch_grid"), read("generate"), {}
if bench:
    at_64_fp16 = bench["resolution"] == 64 and bench["dtype"] == "float16"
    goals["step_over_floor_at_64_fp16"] = {"value": bench["ratio"], "goal": 1.15, "met": at_64_fp16 and bench["ratio"] <= 1.15}
if generate:
    projected = generate["train_s"] * 5000 / max(generate["steps"], 1)
    goals["5000_steps_s"] = {"value": round(projected, 1), "goal": 360, "met": projected < 360}
    goals["peak_mem_mb"] = {"value": generate["peak_mem_mb"], "goal": 8192, "met": generate["peak_mem_mb"] < 8192}
failed = (out / "failed.txt").read_text().splitlines() if (out / "failed.txt").exists() else []
doctors = {path.stem: (read(path.stem) or {}).get("ok") for path in sorted(out.glob("doctor_*.out"))}
print(json.dumps({"bench_precision": precision, "goals": goals, "failed": failed, "doctors_ok": doctors}))
PYTHON
cat "$OUT/summary.out"
