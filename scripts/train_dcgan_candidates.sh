#!/usr/bin/env bash
# Train DCGAN recipes side by side on one GPU for MINUTES each, then measure every candidate with
# scripts/check_bundled.py --quality-only. The bundled generator is chosen from these figures.
#
#   MINUTES=5 DEVICE=cuda WORKERS=4 OUT=/tmp/candidates bash scripts/train_dcgan_candidates.sh \
#       base: "snh:--loss hinge --spectral-norm" "mbstd:--minibatch-std"
#
# Each argument is NAME:FLAGS, FLAGS being added to the common recipe below (a flag given again there
# wins, e.g. --seed). Each training runs `evolver train-gan` with WORKERS processes preparing the
# corpus (the stream is the same as with none): keep NAMES x (WORKERS + 1) within the machine's cores.
# Its folder runs/gpu-NAME holds the generator, the card (with the exact command) and the sample
# grids (RUNS=DIR puts them in DIR/gpu-NAME); OUT receives NAME.safetensors, NAME.png (the last grid)
# and summary.txt.
#
# SMOKE=1 trains each candidate for one step on the CPU and measures it with check_bundled's --smoke:
# it checks that the script runs, on a machine without a GPU; its figures mean nothing.
set -eu
MINUTES=${MINUTES:-5}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-4}
OUT=${OUT:-runs/candidates}
RUNS=${RUNS:-runs}
smoke=()
if [ "${SMOKE:-0}" = 1 ]; then
  MINUTES=0.0001 DEVICE=cpu WORKERS=0
  smoke=(--smoke)
fi
mkdir -p "$OUT" "$RUNS"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

names=()
pids=()
for candidate in "$@"; do
  name=${candidate%%:*}
  names+=("$name")
  # shellcheck disable=SC2086  # FLAGS are words on purpose
  python3 -m evolver train-gan --out "$RUNS/gpu-$name" --steps 1000000 --ema 0.999 --seed 0 --device "$DEVICE" \
    --workers "$WORKERS" --max-minutes "$MINUTES" --checkpoint-every 1000000 --sample-every 5000 --quiet ${candidate#*:} \
    >"$RUNS/gpu-$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done  # a failed training stops the script here
pids=()

for name in "${names[@]}"; do
  OMP_NUM_THREADS=5 python3 scripts/check_bundled.py --weights "$RUNS/gpu-$name/generator.safetensors" \
    --quality-only "${smoke[@]}" >"$RUNS/gpu-$name.quality.json" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

for name in "${names[@]}"; do
  {
    echo "=== $name"
    cat "$RUNS/gpu-$name.log" "$RUNS/gpu-$name/card.json" "$RUNS/gpu-$name.quality.json"
  } >>"$OUT/summary.txt"
  cp "$RUNS/gpu-$name/generator.safetensors" "$OUT/$name.safetensors"
  cp "$(ls "$RUNS/gpu-$name"/samples/*.png | tail -1)" "$OUT/$name.png"
done
cat "$OUT/summary.txt"
