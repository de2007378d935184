#!/usr/bin/env bash
# Compile the GPU build (`--features cuda`) on a machine with no GPU and no system CUDA, so
# that CUDA-only code cannot rot unnoticed. Installs NVIDIA's CUDA 13.4 compiler wheels from
# PyPI into .venv-cuda on first use (about 121 MB), then runs `cargo check --features cuda`
# for every target, in target/cuda so the default build's cache is untouched. candle's
# kernels are compiled by nvcc for CUDA_COMPUTE_CAP (default 80; set the real GPU's value,
# e.g. 90 for H100, when building to run). Nothing is linked, so the CUDA driver and the
# large runtime libraries are not needed. First run: about 12 to 15 minutes on 2 cores.
#
# Why 13.4: cudarc's version table ends at 13.4 (candle-core reads `nvcc --version`); the
# -cu12 wheels ship no nvcc driver, cicc or cudafe++.
set -euo pipefail
cd "$(dirname "$0")/.."
V=13.4.92
if [ ! -x .venv-cuda/bin/python ]; then
    python3 -m venv .venv-cuda
fi
if [ ! -x .venv-cuda/cu13/bin/nvcc ]; then
    .venv-cuda/bin/pip install -q "nvidia-cuda-nvcc==$V" "nvidia-cuda-crt==$V" "nvidia-nvvm==$V" \
        "nvidia-cuda-runtime==$V" "nvidia-cuda-cccl==13.3.4.3.1"
    site=$(.venv-cuda/bin/python -c 'import site; print(site.getsitepackages()[0])')
    ln -sfn "$site/nvidia/cu13" .venv-cuda/cu13
fi
CU="$PWD/.venv-cuda/cu13"
export PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
nvcc --version | tail -n 2
cargo check --locked --features cuda --all-targets --target-dir target/cuda
echo "check_cuda: --features cuda compiles (compute capability $CUDA_COMPUTE_CAP)"
