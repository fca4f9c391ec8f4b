#!/usr/bin/env bash
# The checks a lent GPU machine is for (../shared/GPU.md), as one call: what the meters see
# (selfcheck), the gpu_widths study with measured GPU energy, the benchmarks, a calibration,
# and a second process on the same GPU. Each step has its own time limit; a step that fails or
# runs out does not stop the next. Everything worth keeping lands in $OUT.
#
#   OUT=/tmp/gpu bash scripts/gpu_checks.sh [STEP ...]    (default: every step, in order)
#   OUT=/tmp/gpu BLOCKS="1:0 2:0" bash scripts/gpu_checks.sh widths   (blocks of gpu_widths)
#   bash scripts/gpu_checks.sh stage     (only unpack what this call brought)
#
# The device machine has torch but not this project's other packages and no network: wheels
# travel in .whl/, Fashion-MNIST in .fmnist1/ and .fmnist2/, and a shallow copy of .git in
# .gitshallow/ so the records' provenance names the commit; scripts/gpu_carry.sh makes them
# (ignored by git through .git/info/exclude) and prints the two calls' carry lists and sizes.
#
# The gpu_widths records still to be made (#29 item 8, ../shared/GPU.md step 2): 3 repeats, each
# cell training for at least 60 s. The first session with a GPU (always the same kind, e.g.
# nvidia-h100-x1: records of two machines are never compared) resizes studies/gpu_widths.toml
# to epochs = 45, train_subset = 60000, test_subset = 10000 (from the H200 records' steady epochs,
# 0.47-0.49 s fp32 and 0.60-0.67 s amp per 20k images: ~65 s fp32 and ~81-91 s amp of training
# per cell, ~9 min per seed), says so in its description and commits; then gpu_carry.sh, call 1,
# and call 2 at once with two blocks (BLOCKS="1:0 2:0"); later sessions the next blocks. The
# records come back in $OUT/records.tgz: unpack into runs/gpu_widths, commit, rebuild the report
# at a clean commit. Resizing before a GPU is lent would mark the committed records stale.
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
STEPS=${*:-env selfcheck power widths bench calibrate neighbour pack}
GPU_TAG=${GPU_TAG:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
    | tr 'A-Z ' 'a-z-' | sed 's/^nvidia-//; s/^/nvidia-/')}
GPU_TAG=${GPU_TAG:-no-gpu}
# What scripts/gpu_carry.sh made travels over two calls (one call's 64 MiB cannot hold the
# working tree, the wheels and the data): the first brings .whl, .gitshallow and .fmnist1, the
# second .gitshallow and .fmnist2. What a call unpacks stays in /tmp while the machine is warm.
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site:$PWD
else echo "(no wheels on this machine: a machine given back between the two calls starts bare;"\
    "run the first call again)"
fi
# the device copy may hold a .git of an older commit: the shallow copy of this one replaces it
# (the commit and its trees, no file contents; the index is read from them)
if [ -d .gitshallow ]; then rm -rf .git && mv .gitshallow .git && git read-tree HEAD; fi
mkdir -p /tmp/fmnist-parts
for part in .fmnist1/* .fmnist2/*; do [ -f "$part" ] && cp "$part" /tmp/fmnist-parts/; done
if [ ! -f /tmp/fmnist/train-images-idx3-ubyte ] && [ -f /tmp/fmnist-parts/fmnist.sha256 ] \
        && [ -f /tmp/fmnist-parts/fmnist.tar.xz.1 ] && [ -f /tmp/fmnist-parts/fmnist.tar.xz.2 ]; then
    (cd /tmp/fmnist-parts && cat fmnist.tar.xz.1 fmnist.tar.xz.2 > fmnist.tar.xz \
        && sha256sum -c --quiet fmnist.sha256) || exit 1
    mkdir -p /tmp/fmnist && python3 -c "import tarfile
tarfile.open('/tmp/fmnist-parts/fmnist.tar.xz').extractall('/tmp/fmnist', filter='data')" || exit 1
fi
if [ -f /tmp/fmnist/train-images-idx3-ubyte ]; then export FASHION_MNIST_DIR=/tmp/fmnist
else echo "(no Fashion-MNIST here yet: the steps that train need the second call's .fmnist2)"
fi
export PYTHONUNBUFFERED=1
step() { echo; echo "== $(date -u +%T) $1 (limit ${2} s)"; }
for s in $STEPS; do
    case $s in
    stage) ls /tmp/site 2>/dev/null | wc -l | xargs echo "packages in /tmp/site:"
        ls /tmp/fmnist 2>/dev/null | xargs echo "Fashion-MNIST in /tmp/fmnist:" ;;
    env)
        step env 30
        nvidia-smi --query-gpu=name,driver_version,power.limit,power.draw,clocks.sm --format=csv
        timeout 30 python3 -c "import sys, torch, zeus, papermill, nbformat, ipykernel, torch_pruning, energy_lib
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda', 'zeus', zeus.__version__, 'energy_lib', energy_lib.__version__)"
        git rev-parse HEAD && git status --porcelain --untracked-files=no | head ;;
    selfcheck)
        step selfcheck 60
        timeout 60 python3 -m energy_lib selfcheck ;;
    power)
        # one short cell: the GPU counter's measured update period and Zeus's PowerMonitor
        # series in the record's timeline (#31)
        step "one cell: counter period and GPU power timeline" 60
        timeout 60 python3 -m energy_lib run studies/gpu_widths.toml --no-report --no-plan \
            --runs-dir /tmp/power_runs --cell width-1_precision-fp32_seed-0 --set epochs=1
        timeout 30 python3 -c "import glob, statistics
from energy_lib.records import read_record
rec = read_record(glob.glob('/tmp/power_runs/gpu_widths/*.ipynb')[0])
print('update periods (s):', rec.meters.get('update_periods_s'))
print('\n'.join(rec.meters.get('descriptions', [])))
gpu = [r for r in rec.timeline.get('samples', []) if r['component'] == 'gpu']
gaps = [b['t_s'] - a['t_s'] for a, b in zip(gpu, gpu[1:])]
print(len(gpu), 'GPU timeline samples; median gap', statistics.median(gaps) if gaps else None,
      's; methods', sorted({r['method'] for r in gpu}))
print('flags:', sorted({r['flag'] for r in rec.energy if r['component'] == 'gpu' and r['flag']}))" ;;
    widths)
        # #29 item 8: whole comparison blocks of gpu_widths (one width x seed: its fp32 and amp
        # cells) in ONE runner invocation, so that no comparison pairs records of two
        # invocations. BLOCKS="1:0 2:0" (width:seed pairs); WIDTHS_LIMIT seconds (default 540).
        # --rerun-block: a block one of whose arms finished in an earlier, cut-off invocation
        # is run whole again.
        limit=${WIDTHS_LIMIT:-540}
        step "gpu_widths blocks: ${BLOCKS:-none given}" "$limit"
        cells=()
        for block in ${BLOCKS:-}; do
            for precision in fp32 amp; do
                cells+=(--cell "width-${block%%:*}_precision-${precision}_seed-${block##*:}")
            done
        done
        if [ ${#cells[@]} -eq 0 ]; then echo "widths: set BLOCKS, e.g. BLOCKS=\"1:0 2:0\""
        else
            timeout -s TERM "$limit" python3 -m energy_lib run studies/gpu_widths.toml \
                --no-report --no-plan --rerun-block "${cells[@]}"
            python3 -m energy_lib list studies/gpu_widths.toml
        fi ;;
    bench)
        step "benchmarks P1-P4" 100
        timeout 100 python3 -m benchmarks --only P1,P2,P3,P4 --out "$OUT/$GPU_TAG.json" ;;
    calibrate)
        step "calibrate --quick" 60
        timeout 60 python3 -m energy_lib calibrate --quick --device cuda --machine "$GPU_TAG" \
            --out-dir "$OUT/calibration" ;;
    neighbour)
        # a second process keeps the GPU busy while one cell trains: the record must say so
        step "one cell beside a GPU neighbour" 50
        timeout 55 python3 -c "import torch, time
a = torch.randn(8192, 8192, device='cuda'); end = time.time() + 50
while time.time() < end: a @ a; torch.cuda.synchronize()" &
        sleep 5
        timeout 45 python3 -m energy_lib run studies/gpu_widths.toml --no-report \
            --runs-dir /tmp/neighbour_runs --cell width-1_precision-fp32_seed-0 --set epochs=2
        kill %1 2>/dev/null; wait ;;
    pack)
        step pack 30
        tar czf "$OUT/records.tgz" runs/gpu_widths /tmp/neighbour_runs /tmp/power_runs \
            "$OUT/calibration" 2>/dev/null
        ls -la "$OUT" ;;
    *) echo "unknown step $s"; exit 2 ;;
    esac
done
