#!/usr/bin/env bash
# The GPU figures of the training-speed work, in one prepared run on a lent H100/H200 (about 10
# minutes). Bring diffusers/kornia as wheels first (../shared/GPU.md: `.whl/`, PYTHONPATH), then:
#
#   OUT=/tmp/out bash benchmarks/gpu_training_speed.sh
#
# Writes $OUT/<name>.json and $OUT/<name>.log per benchmark; a part that runs out of time is
# cut by its own timeout and the others still run.
set -uo pipefail
OUT=${OUT:-/tmp/scg-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
run() {  # run NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$OUT/summary.log"
    timeout "$limit" "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
    echo "exit $?" >> "$OUT/$name.log"
    grep -E '^\||×' "$OUT/$name.log" | tee -a "$OUT/summary.log"
}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/summary.log"
# the autoencoder trainer: data paths side by side, then CUDA graphs
run ae_eager 200 $PY benchmarks/bench_train_ae.py --device cuda --steps 300 --warmup 20 --paths host,device-images,device
run ae_graphs 200 $PY benchmarks/bench_train_ae.py --device cuda --steps 300 --warmup 20 --paths device --compile reduce-overhead
run ae_default 90 $PY benchmarks/bench_train_ae.py --device cuda --steps 300 --warmup 20 --paths device --preset default_ae
# the ControlNet step: reference, ours, then each lever alone (SD1.5 shapes, 512², bf16)
run cn_levers 330 $PY benchmarks/bench_train_controlnet.py --device cuda --shapes sd15 --resolution 512 --precision bf16 \
    --rounds 1 --steps 10 --warmup 3 \
    --variants reference,ours,ours+channels_last,ours+tf32,ours+cudnn_benchmark,ours+sdpa_flash,ours+sdpa_cudnn,ours+hint_mixed,ours+channels_last+cudnn_benchmark+hint_mixed
run cn_compile 240 $PY benchmarks/bench_train_controlnet.py --device cuda --shapes sd15 --resolution 512 --precision bf16 \
    --rounds 1 --steps 10 --warmup 5 --no-flops --variants ours+compile
run cn_batches 300 $PY benchmarks/bench_train_controlnet.py --device cuda --shapes sd15 --resolution 512 --precision bf16 \
    --rounds 1 --steps 6 --warmup 2 --no-flops --variants reference,ours --batches 4,8,16,32
