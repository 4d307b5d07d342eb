#!/usr/bin/env bash
# The GPU column of the README: the whole course in fast mode and the U-Net benchmark, on a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh [OUT]        (OUT defaults to benchmarks/results/gpu)
#
# Writes OUT/device.txt (the GPU, driver, torch), OUT/course-fast.log and OUT/summary.txt (each
# lesson's seconds and claims, from the course runner; the lessons turn on bfloat16 autocast where
# the GPU has it, and say so in their first lines), and OUT/bench_unet.txt (training and sampling
# throughput and memory of the U-Net, against diffusers' when it is installed). On a machine without
# a CUDA GPU it stops at once and says so: CPU numbers come from the other benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu}"
python="${PYTHON:-.venv/bin/python}"
"$python" -c 'import sys, torch; torch.cuda.is_available() or sys.exit("gpu_check.sh: torch sees no CUDA GPU here, so there is nothing to measure (the CPU numbers come from the other benchmarks)")'
mkdir -p "$out"
{
    "$python" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| bf16:", torch.cuda.is_bf16_supported())'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    date -u +"measured %Y-%m-%d %H:%M UTC"
} | tee "$out/device.txt"
start=$(date +%s)
course=0  # a lesson that fails (a claim that does not hold on this GPU, say) is recorded; the benchmark still runs
MINIDIFF_FAST=1 "$python" -m minidiff.run_course notebooks/[0-9][0-9]_*.ipynb --out "$out/course-fast" 2>&1 \
    | tee "$out/course-fast.log" || course=$?
{
    grep -E '^[0-9]{2}_\w+ +[0-9.]+ s ' "$out/course-fast.log" || true
    echo "whole fast course: $(( $(date +%s) - start )) s (kernel start-ups included)"
} | tee "$out/summary.txt"
"$python" benchmarks/bench_unet.py --device cuda 2>&1 | tee "$out/bench_unet.txt"
exit "$course"
