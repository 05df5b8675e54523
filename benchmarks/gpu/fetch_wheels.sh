#!/usr/bin/env bash
# Fill benchmarks/gpu/wheels/ (gitignored) with what the GPU machine lacks, at the versions CI tests
# (constraints/ci.txt): diffusers and its one requirement the GPU image lacks, importlib_metadata
# (pure Python), and bitsandbytes (NF4; one manylinux wheel for every Python 3). About 48 MB: the
# carried folders may hold 64 MiB in all. Run it here, where the registry is reachable; then carry benchmarks/gpu/wheels to the
# GPU machine with the repository and run benchmarks/gpu/run.sh there.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
version() { sed -n "s/^$1==//p" "$root/constraints/ci.txt"; }
mkdir -p wheels
python3 -m pip download --no-deps --only-binary=:all: --dest wheels \
    "diffusers==$(version diffusers)" \
    "importlib_metadata==$(version importlib_metadata)" \
    "bitsandbytes==$(version bitsandbytes)" --platform manylinux_2_24_x86_64 --python-version 3.11
du -sh wheels/*
