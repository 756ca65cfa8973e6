#!/usr/bin/env bash
# One call on a GPU machine, from the repository root, in under 8 minutes: the CUDA tests, the training benchmark
# with its baselines measured in the same run, and the kernel table; at most 8 files under $OUT.
#
#   bash benchmarks/gpu_session.sh                 # part "speed" (default): tests, engine eager and compiled,
#                                                  # bare step, bandwidth, references timed over 3 epochs
#   bash benchmarks/gpu_session.sh accuracy        # part "accuracy": 25 epochs x 2 seeds of the engine, of the
#                                                  # engine 2 runs per GPU, and of the reference with 16 workers
#   bash benchmarks/gpu_session.sh --tiny          # the same code on a CPU with tiny settings (the test suite)
#
# Carried to the machine (docs/benchmarks.md): .device-data/cifar10-jpeg.tar.gz and .whl/ (fvcore, submitit, ...).
# Environment: OUT (default: a new temporary folder), DATA (default .device-data/cifar10-jpeg.tar.gz),
# CONVMIXER_CACHE (default .device-data/cache: decoded splits and Inductor's cache), KERNELS_ARGS (for
# python -m benchmarks.kernels, run when that module exists).
# Files in $OUT: session.txt, train_speed(.json|.md) or train_speed_accuracy(.json|.md), kernels.txt, logs.tar.gz.
# Each step has its own time limit and the script goes on after a failure; session.txt lists every step's exit
# code and seconds. Exit code: 0 when every step passed.
set -u
cd "$(dirname "$0")/.."
PART=speed TINY=0
for arg in "$@"; do
    case "$arg" in
        speed | accuracy) PART=$arg ;;
        --tiny) TINY=1 ;;
        *) echo "gpu_session.sh: error: argument '$arg' is not accepted: expected speed, accuracy or --tiny" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d)}
DATA=${DATA:-.device-data/cifar10-jpeg.tar.gz}
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

if [ "$TINY" = 1 ]; then
    SPEED=(--device cpu --epochs 2 --train-subset 100 --test-subset 50 --width 8 --depth 1 --batch-size 50
           --workers 0 --bare-steps 2 --copy-mb 8)
    SPEED_VARIANTS=engine,reference,reference-workers ACCURACY_VARIANTS=engine,engine-2-per-device,reference-workers
    LIMIT=300
else
    SPEED=() SPEED_VARIANTS=engine,engine-compiled,reference,reference-workers
    ACCURACY_VARIANTS=engine,engine-2-per-device,reference-workers LIMIT=420
fi

if [ "$PART" = speed ]; then
    step cuda-tests 120 python -m pytest -q -m cuda -p no:cacheprovider -rfEs tests/test_cuda.py
    step train-speed "$LIMIT" python -m benchmarks.train_speed --data "$DATA" "${SPEED[@]}" --seeds 2 \
        --variants "$SPEED_VARIANTS" --reference-epochs 3 --out "$OUT/train_speed.json"
    if [ -f benchmarks/kernels.py ] && [ "$TINY" = 0 ]; then  # the kernel table's CPU path is its own tests'
        step kernels 120 python -m benchmarks.kernels ${KERNELS_ARGS:-}
        cp "$LOGS/kernels.txt" "$OUT/kernels.txt"
    fi
else
    step train-speed "$LIMIT" python -m benchmarks.train_speed --data "$DATA" "${SPEED[@]}" --seeds 2 \
        --variants "$ACCURACY_VARIANTS" --out "$OUT/train_speed_accuracy.json"
fi

tar -czf "$OUT/logs.tar.gz" -C "$LOGS" --exclude site .
rm -rf "$LOGS"
echo "exit $STATUS; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$SUMMARY"
exit "$STATUS"
