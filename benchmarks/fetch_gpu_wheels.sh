#!/usr/bin/env bash
# Fetch, on a machine with pip access, the wheels that the GPU machine's image lacks (lightly,
# faiss-cpu, omegaconf, kornia and what they need beyond that image), for its Python 3.12 on
# x86-64, into .whl/ at the repository root. benchmarks/gpu_check.sh installs them from there
# before it measures anything, so a lent GPU session spends its minutes measuring.
# Versions are the ones this checkout is tested with; antlr4 4.9.3 exists only as an sdist, so
# it is built into a (pure-Python) wheel here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  lightly==1.6.0 kornia==0.9.0 kornia_rs==0.2.0 omegaconf==2.3.1 hydra-core==1.3.8 faiss-cpu==1.15.1
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
