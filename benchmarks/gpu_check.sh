#!/usr/bin/env bash
# One-GPU check, about 7 minutes (benchmarks/gpu_step.py, issue 20): the machine's ceilings, one
# step split into its parts with CUDA events, the ladder of speed-ups as ratios to today's path
# in the same run, the sync-free check under torch.cuda.set_sync_debug_mode("error"), and the
# accuracy arm (Fashion-MNIST at 32 px, reference vs fast path, kNN vs raw pixels).
#
#   bash benchmarks/gpu_check.sh [--smoke] [--legacy] [--out RESULTS_DIR | RESULTS_DIR]
#
# --smoke: every phase on the CPU at toy sizes (a few minutes; tests/test_benchmarks.py runs
# it), to check the script before device time is spent on it. Its results go to a new
# temporary directory unless --out (or RESULTS_DIR) names one, so a smoke run never touches
# the measured results in benchmarks/results/gpu.
# --legacy: also the earlier check below (about 7 more minutes; run it alone, not with the new one):
# SimCLR + ResNet-18 (3x3 stem) throughput at 32x32 (fp32/bf16,
# channels_last; model alone, batched augmentation alone, and train.py's path with lightly's
# transforms in workers and with views made on the GPU), GPU utilisation sampled with nvidia-smi
# while each path runs, SyRe overhead on the GPU, and per path the extrapolated time of
# lightly's 200-epoch CIFAR-10 recipe. Data are synthetic CIFAR-sized images (no CIFAR on these machines).
#
# Fashion-MNIST for the accuracy arm travels with the working tree in an ignored folder that
# the device call carries (with the wheels), read from $FASHION_MNIST (default .fmnist/):
#   echo /.fmnist/ >> .git/info/exclude; mkdir -p .fmnist
#   cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/     (the four files, 30 MB)
#   carry: [".whl", ".fmnist"]
# Without it the arm uses the data set's own location (data.root unset).
#
# Run from the repository root. Without --smoke, RESULTS_DIR defaults to $OUT (the device
# runner's folder) or benchmarks/results/gpu. Every step has its own timeout and a failure does not stop the
# others; summary.txt lists each step's exit status.
set -u
cd "$(dirname "$0")/.."
SMOKE=0
LEGACY=0
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --legacy) LEGACY=1; shift ;;
    --out)
      [ $# -ge 2 ] || { echo "error: --out needs a directory (--out RESULTS_DIR)" >&2; exit 2; }
      RESULTS="$2"; shift 2 ;;
    --out=*) RESULTS="${1#--out=}"; shift ;;
    *) break ;;
  esac
done
if [ -n "${1:-}" ]; then
  RESULTS="$1"
fi
if [ -z "$RESULTS" ]; then
  if [ "$SMOKE" = 1 ]; then
    RESULTS="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_smoke.XXXXXX")"
  else
    RESULTS="${OUT:-benchmarks/results/gpu}"
  fi
fi
mkdir -p "$RESULTS"
PY="${PYTHON:-python3}"
FASHION_MNIST="${FASHION_MNIST:-.fmnist}"
# The GPU image lacks lightly, faiss, omegaconf and kornia: they travel as wheels in .whl/
# (benchmarks/fetch_gpu_wheels.sh fetches them) and are installed before anything is measured.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "error: installing .whl/*.whl failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
SUMMARY="$RESULTS/summary.txt"
: > "$SUMMARY"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, record the exit status
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
  local started=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - started)) s" | tee -a "$SUMMARY"
  tail -n 5 "$RESULTS/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null \
    || echo "no nvidia-smi (CPU)"
  nproc
  "$PY" -c "import torch, lightning, timm, lightly; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'lightning', lightning.__version__, 'timm', timm.__version__, \
'lightly', lightly.__version__)"
} > "$RESULTS/environment.txt" 2>&1
cat "$RESULTS/environment.txt" >> "$SUMMARY"

# The new check (gpu_step.py), one phase per step so that a failure leaves the others.
STEP_ARGS=()
if [ "$SMOKE" = 1 ]; then
  STEP_ARGS+=(--smoke --threads "${SMOKE_THREADS:-1}")
fi
if compgen -G "$FASHION_MNIST/*.gz" > /dev/null; then
  STEP_ARGS+=(--fashion-mnist "$FASHION_MNIST")
fi
if [ "$SMOKE" = 1 ]; then  # one process: imports cost more than the toy phases on a CPU
  step step_all 600 "$PY" benchmarks/gpu_step.py "${STEP_ARGS[@]}" --out "$RESULTS/step_all.json"
  for phase in ceilings split ladder syncfree accuracy; do
    "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); json.dump({'smoke': True, sys.argv[2]: r[sys.argv[2]]}, open(sys.argv[3], 'w'))" \
      "$RESULTS/step_all.json" "$phase" "$RESULTS/step_$phase.json" 2>> "$SUMMARY"
  done
else
  for phase_limit in ceilings:30 split:45 ladder:150 syncfree:90 accuracy:150; do
    phase="${phase_limit%%:*}"
    limit="${phase_limit##*:}"
    step "step_$phase" "$limit" "$PY" benchmarks/gpu_step.py "${STEP_ARGS[@]}" --phases "$phase" \
      --out "$RESULTS/step_$phase.json"
  done
fi
"$PY" - "$RESULTS" >> "$SUMMARY" 2>&1 <<'PYEOF'
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
def load(phase):
    try:
        return json.loads((folder / f"step_{phase}.json").read_text())[phase]
    except (OSError, KeyError, ValueError):
        return None
ceilings, split, ladder = load("ceilings"), load("split"), load("ladder")
sync, accuracy = load("syncfree"), load("accuracy")
print("== side by side")
print(f"   ceilings: {ceilings}")
if split:
    print(f"   today's step {split['ms_per_step']:.2f} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in split["parts_ms"].items()))
for name, row in (ladder or {}).items():
    print(f"   {name:<10} {row['ms_per_step']:8.2f} ms/step  {row['speedup_vs_today']:5.2f}x today")
print(f"   sync-free: {sync}")
print(f"   accuracy: {accuracy}")
PYEOF

if [ "$LEGACY" = 0 ]; then
  echo "results in $RESULTS" | tee -a "$SUMMARY"
  exit 0
fi

# 1. The training step alone: fp32 / bf16 x contiguous / channels_last (about 1 min).
step model_throughput 120 "$PY" benchmarks/gpu_throughput.py --parts model \
  --out "$RESULTS/model_throughput.json"

# 2. Batched augmentation alone on the GPU (seconds).
step augment_throughput 60 "$PY" benchmarks/gpu_throughput.py --parts augment --profile-dir "$RESULTS" \
  --out "$RESULTS/augment_throughput.json"

# 3. train.py's path (Lightning, bf16-mixed, channels_last, SyRe on), once per augmentation
#    path: lightly's transforms in DataLoader workers, then batched views on the GPU; nvidia-smi
#    samples utilisation every 0.5 s meanwhile (about 2 min each). The summary gives, per
#    path, images/s, GPU utilisation and the extrapolated minutes of lightly's CIFAR-10
#    SimCLR recipe (200 epochs, batch 512; lightly: 87.1 min on one A6000).
for path in workers device; do
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw \
    --format=csv,noheader,nounits -lms 500 > "$RESULTS/nvidia_smi_$path.csv" 2>/dev/null &
  SMI_PID=$!
  step "pipeline_$path" 150 "$PY" benchmarks/gpu_throughput.py --parts pipeline \
    --augment-on "$path" --pipeline-steps 150 --out "$RESULTS/pipeline_$path.json"
  kill "$SMI_PID" 2>/dev/null
  wait "$SMI_PID" 2>/dev/null
  "$PY" - "$path" "$RESULTS/nvidia_smi_$path.csv" "$RESULTS/pipeline_$path.json" >> "$SUMMARY" 2>&1 <<'PYEOF'
import json, sys
path, smi, result = sys.argv[1:4]
rows = [line.split(",") for line in open(smi) if line.count(",") >= 4]
util = sorted(float(r[1]) for r in rows if r[1].strip().replace(".", "").isdigit())
busy = util[len(util) // 10 :]  # drop the idle start-up tenth
gpu = (f"GPU utilisation median {busy[len(busy) // 2]:.0f}%, mean {sum(busy) / len(busy):.0f}% "
       f"over {len(util)} samples") if busy else "no nvidia-smi samples"
try:
    run = json.load(open(result))["pipeline"][path]
    speed = (f"{run['images_per_s']:.0f} images/s, lightly's CIFAR-10 SimCLR recipe "
             f"extrapolated to {run['recipe_minutes_extrapolated']:.1f} min")
except (OSError, KeyError, ValueError):
    speed = "no result (see the step's log)"
print(f"   augment_on={path}: {speed}; {gpu}")
PYEOF
done

# 4. SyRe overhead on the GPU: plain weight decay vs SyRe, interleaved (about 1.5 min).
step syre_overhead 100 "$PY" benchmarks/syre_overhead.py --device cuda --model resnet18 \
  --batch-size 512 --steps 40 --out "$RESULTS/syre_overhead_cuda.json"

echo "results in $RESULTS" | tee -a "$SUMMARY"
