#!/usr/bin/env bash
# Regenerates tests/data/train/expected.json (the trainer's parity references) with the torch
# and transformers versions the PRM fixtures pin, in .venv-prm (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-prm/bin/python ]; then
    python3 -m venv .venv-prm
fi
.venv-prm/bin/pip install -q "torch==2.15.0" "transformers==5.23.0" "tokenizers==0.23.3" numpy safetensors
exec .venv-prm/bin/python tests/train/make_train_refs.py "$@"
