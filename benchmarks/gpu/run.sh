#!/usr/bin/env bash
# The prepared GPU run, one command of at most 9 minutes: install the carried wheels, then every part
# of benchmarks/gpu/driver.py, each time-boxed, writing $OUT/gpu_results.json and $OUT/gpu_run.log.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # once, here (needs the package registry)
#   bash benchmarks/gpu/run.sh                   # on the GPU machine, carrying benchmarks/gpu/wheels
#   bash benchmarks/gpu/run.sh --dry-run         # here, on the CPU: every size shrunk, end to end
#
# PYTHON picks the interpreter (default python3); OUT the results folder (default runs/gpu); other
# arguments go to the driver (--budget SECONDS, --only PART ...).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
log="$OUT/gpu_run.log"
start=$(date +%s)
{
    echo "idgen GPU run, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ " $* " != *" --dry-run "* ]]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        wheels=(benchmarks/gpu/wheels/*.whl)
        if [[ -e "${wheels[0]}" ]]; then
            # --target keeps the image's own packages untouched; PYTHONPATH puts these first
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/idgen-gpu-site "${wheels[@]}" && export PYTHONPATH=/tmp/idgen-gpu-site
        else
            echo "no wheels in benchmarks/gpu/wheels (run benchmarks/gpu/fetch_wheels.sh here and carry the folder)"
        fi
    fi
    # the driver's budget (480 s on the GPU) leaves the 9 minutes room for start-up and the wheels
    PYTHONUNBUFFERED=1 "$PYTHON" benchmarks/gpu/driver.py --output-dir "$OUT" "$@"
    echo "run.sh: $(( $(date +%s) - start )) s in all"
} 2>&1 | tee "$log"
