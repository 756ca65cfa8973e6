#!/usr/bin/env bash
# One call on a GPU machine, from the repository root, in under 10 minutes: the CUDA tests and the training benchmark
# with its baselines measured in the same run, or the kernel table, or ...; at most 8 files under $OUT.
#
#   bash benchmarks/gpu_session.sh             # part "speed" (default): pytest -m cuda; each op of one training
#                                              # step against its floor at k = 5 and 9 (python -m benchmarks.step_floor);
#                                              # the engine (1 seed) and the engine compiled (2 seeds: cold, then warm
#                                              # cache), the bare step and bandwidth, the references timed over 2 epochs
#   bash benchmarks/gpu_session.sh step        # the step eager vs compiled vs compiled + CUDA graphs at k = 5 and 9
#                                              # against its floor, with its kernels (python -m benchmarks.fused_step)
#   bash benchmarks/gpu_session.sh kernels     # the per-kernel-size table (python -m benchmarks.kernels)
#   bash benchmarks/gpu_session.sh loader      # the streaming loader's CUDA test and img/s per core with nvJPEG
#                                              # beside Pillow and torchvision (python -m benchmarks.loader)
#   bash benchmarks/gpu_session.sh accuracy    # 25 epochs x 2 seeds of the engine and the 16-worker reference
#   bash benchmarks/gpu_session.sh jobs        # N seeds as one grouped model vs one after another, N = 1, 2, 4, 8
#                                              # (python -m benchmarks.grouped_speed, 60 s); then 25 epochs x 2
#                                              # seeds of the engine, one after another and side by side on one GPU
#                                              # (--jobs-per-device 1 vs 2)
#   bash benchmarks/gpu_session.sh study       # the next runs of studies/cifar10-gpu.toml into results/cifar10-gpu
#                                              # (those that fit in STUDY_MINUTES, default 7), brought back as
#                                              # $OUT/cifar10-gpu.tar.gz without checkpoints
#   bash benchmarks/gpu_session.sh --tiny      # the same code on a CPU with tiny settings (the test suite)
#
# Carried to the machine (docs/benchmarks.md): .device-data/cifar10-jpeg.tar.gz and .whl/ (fvcore, submitit, ...).
# Environment: OUT (default: a new temporary folder), DATA (default $CONVMIXER_CIFAR10_JPEG, else the carried
# .device-data/cifar10-jpeg.tar.gz; exported as CONVMIXER_CIFAR10_JPEG to every command),
# CONVMIXER_CACHE (default .device-data/cache: decoded splits and Inductor's cache), KERNELS_ARGS (for
# python -m benchmarks.kernels), STUDY (default studies/cifar10-gpu.toml), STORE (default results/<its stem>),
# STUDY_MINUTES (default 7; the sweep then exits 1, its runs not all done, which session.txt shows).
# Files in $OUT: session.txt, step_floor.json and .md, fused_step.json and .md, train_speed[_accuracy|_jobs].json
# and .md, kernels.json and .md, loader.json and .md, grouped.json and .md, <study>.tar.gz, logs.tar.gz.
# Each step has its own time limit and the script goes on after a failure; session.txt lists every step's exit
# code and seconds. Exit code: 0 when every step passed.
set -u
cd "$(dirname "$0")/.."
PART=speed TINY=0
for arg in "$@"; do
    case "$arg" in
        speed | step | kernels | loader | accuracy | jobs | study) PART=$arg ;;
        --tiny) TINY=1 ;;
        *) echo "gpu_session.sh: error: argument '$arg' is not accepted: expected speed, step, kernels, loader, accuracy, jobs, study or --tiny" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d)}
DATA=${DATA:-${CONVMIXER_CIFAR10_JPEG:-.device-data/cifar10-jpeg.tar.gz}}
export CONVMIXER_CIFAR10_JPEG=$DATA
export CONVMIXER_CACHE=${CONVMIXER_CACHE:-$PWD/.device-data/cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -e "$DATA" ]; then
    echo "gpu_session.sh: error: DATA='$DATA' is not accepted: it does not exist (see docs/benchmarks.md)" >&2
    exit 2
fi
mkdir -p "$OUT" "$CONVMIXER_CACHE"
LOGS=$(mktemp -d)
SUMMARY="$OUT/session.txt"
STATUS=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.txt, record the outcome
    local name=$1 limit=$2 start code
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.txt" 2>&1
    code=$?
    [ "$code" -eq 0 ] || STATUS=1
    printf '%-12s exit %-3s %4s s  %s\n' "$name" "$code" "$(($(date +%s) - start))" "$*" | tee -a "$SUMMARY"
}

{
    echo "gpu_session $PART (tiny=$TINY) at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} >"$SUMMARY" 2>&1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 120 python -m pip install -q --no-index --no-deps --target "$LOGS/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$LOGS/site"
fi

# Time limits from the H200 sittings (docs/benchmarks.md): each part fits one call of under 10 minutes. The
# benchmarks write what they measured after every variant or kernel size, so a step cut off keeps its rows.
if [ "$TINY" = 1 ]; then
    SHAPE=(--device cpu --set epochs=2,train_subset=100,test_subset=50,dim=8,depth=1,batch_size=50
           --workers 0 --bare-steps 2 --copy-mb 8)
    FLOOR=(--device cpu --set dim=8,depth=1,batch_size=8 --image-size 16 --kernels 3 --steps 1 --copy-mb 8
           --matmul-size 128)
    COMPILED=engine  # a cold Inductor compile takes a minute on a small CPU; the tests cover that path
    GROUPED=(--device cpu --set dim=8,depth=1,batch_size=8 --groups 1,2 --time-budget 5)
else
    SHAPE=() COMPILED=engine,engine-compiled FLOOR=(--kernels 5,9) GROUPED=(--device cuda --time-budget 60)
fi
FUSED=(--kernels 5,9)  # ConvMixer-256/8 p2, 32 px, batch 512, bf16 (the cifar10 preset); --tiny: FLOOR's tiny shape
[ "$TINY" = 1 ] && FUSED=("${FLOOR[@]}" --modes eager)  # a compile takes a minute on a small CPU: the tests cover it
case "$PART" in
    speed)
        step cuda-tests 150 python -m pytest -q -m cuda -p no:cacheprovider -rfEs tests/test_cuda.py tests/test_kernels.py
        # the profile of one training step against the floor model (issue 34): about 10 s of steps, the rest start-up
        step step-floor 75 python -m benchmarks.step_floor "${FLOOR[@]}" --out "$OUT/step_floor.json"
        step train-speed 360 python -m benchmarks.train_speed --data-root "$DATA" "${SHAPE[@]}" --seeds 1 \
            --compiled-seeds 2 --variants "$COMPILED,reference,reference-workers" --reference-epochs 2 \
            --out "$OUT/train_speed.json" ;;
    step)  # each of 2 k x 3 modes: a compile (cold: about a minute) and 20 timed steps; a row written after each
        step fused-tests 90 python -m pytest -q -m cuda -p no:cacheprovider -rfEs tests/test_fused_step.py
        step fused-step 450 python -m benchmarks.fused_step "${FUSED[@]}" --out "$OUT/fused_step.json" ;;
    kernels)  # its CPU path is its own tests'
        step kernels 540 python -m benchmarks.kernels --out "$OUT/kernels.json" ${KERNELS_ARGS:-} ;;
    loader)
        LOADER=(--device cuda); [ "$TINY" = 1 ] && LOADER=(--device cpu --images 10 --repeats 1)
        step stream-tests 120 python -m pytest -q -m cuda -p no:cacheprovider -rfEs tests/test_stream.py
        step loader 300 python -m benchmarks.loader "${LOADER[@]}" --out "$OUT/loader.json" ;;
    accuracy)
        step train-speed 450 python -m benchmarks.train_speed --data-root "$DATA" "${SHAPE[@]}" --seeds 2 \
            --variants engine,reference-workers --out "$OUT/train_speed_accuracy.json" ;;
    study)
        STUDY=${STUDY:-studies/cifar10-gpu.toml}
        STORE=${STORE:-results/$(basename "$STUDY" .toml)}
        DEVICES=cuda; [ "$TINY" = 1 ] && DEVICES=cpu
        step study $((${STUDY_MINUTES:-7} * 60 + 60)) python -m ablations.run --study "$STUDY" --out "$STORE" \
            --data-root "$DATA" --devices "$DEVICES" --time-limit "${STUDY_MINUTES:-7}"
        tar -czf "$OUT/$(basename "$STORE").tar.gz" --exclude 'checkpoint.pt*' --exclude .lock \
            -C "$(dirname "$STORE")" "$(basename "$STORE")" ;;
    jobs)
        step grouped 120 python -m benchmarks.grouped_speed "${GROUPED[@]}" --out "$OUT/grouped.json"
        step train-speed 420 python -m benchmarks.train_speed --data-root "$DATA" "${SHAPE[@]}" --seeds 2 \
            --variants engine,engine-2-per-device --out "$OUT/train_speed_jobs.json" ;;
esac

tar -czf "$OUT/logs.tar.gz" -C "$LOGS" --exclude site .
rm -rf "$LOGS"
echo "exit $STATUS; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$SUMMARY"
exit "$STATUS"
