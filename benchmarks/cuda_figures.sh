#!/usr/bin/env bash
# Issue 9's CUDA figures in one go on a GPU machine: the loop against its forward passes at the
# run's batch (40; 2,000 generations, so that the run's setup does not dominate) and at a batch that
# fills more of the GPU (400), compiled, 64 units in one run against 64 single-unit runs, and the
# bf16 ranking check on the GPU. Each step goes on if an earlier one fails; the exit status says
# whether any did.
#
# SMOKE=1 runs every step with --smoke on the CPU: it checks that the script runs, on a machine
# without a GPU; its figures mean nothing.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
device=cuda
smoke=()
if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu
  smoke=(--smoke)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
status=0
step() { "$@" || status=1; }
step python3 benchmarks/loop_speed.py --device $device --generations 2000 --rss-generations 1000 "${smoke[@]}"
step python3 benchmarks/loop_speed.py --device $device --population 400 --generations 300 --rss-generations 0 "${smoke[@]}"
step python3 benchmarks/loop_speed.py --device $device --generations 2000 --rss-generations 0 --compile "${smoke[@]}"
step python3 benchmarks/many_units.py --units resnet50:layer4:unit0-63 --weights random --generations 30 --device $device "${smoke[@]}"
step python3 benchmarks/bf16_ranking.py --device $device "${smoke[@]}"
exit $status
