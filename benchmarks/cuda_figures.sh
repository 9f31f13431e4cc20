#!/usr/bin/env bash
# Issue 9's CUDA figures in one go on a GPU machine: the loop against its forward passes at the
# run's batch (40; 2,000 generations, so that the run's setup does not dominate) and at a batch that
# fills more of the GPU (400), compiled, 64 units in one run against 64 single-unit runs, and the
# bf16 ranking check on the GPU. Each step goes on if an earlier one fails.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/loop_speed.py --device cuda --generations 2000 --rss-generations 1000
python3 benchmarks/loop_speed.py --device cuda --population 400 --generations 300 --rss-generations 0
python3 benchmarks/loop_speed.py --device cuda --generations 2000 --rss-generations 0 --compile
python3 benchmarks/many_units.py --units resnet50:layer4:unit0-63 --weights random --generations 30 --device cuda
python3 benchmarks/bf16_ranking.py --device cuda
