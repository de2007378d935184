#!/usr/bin/env bash
# PRM throughput: stepkto vs Hugging Face transformers on the same checkpoint and items.
# Installs torch + transformers into .venv-prm on first use (PyPI; about 5 GB with the CUDA
# wheels PyPI serves), then runs benches/prm_throughput.rs, which runs both sides and prints
# the ratio. Reads ../shared/data/processbench/math.jsonl when present.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-prm/bin/python ]; then
    python3 -m venv .venv-prm
    .venv-prm/bin/pip install -q torch transformers safetensors tokenizers numpy
fi
export STEPKTO_BENCH_PYTHON="$PWD/.venv-prm/bin/python"
exec cargo bench --bench prm_throughput
