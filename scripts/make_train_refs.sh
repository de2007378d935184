#!/usr/bin/env bash
# Regenerates the trainer's references: tests/data/train/expected.json (transformers'
# log-probabilities and greedy generations) and tests/data/train/kto.json (TRL's KTO loss
# code), with the torch and transformers versions the PRM fixtures pin and TRL 1.16.0, in
# .venv-prm (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-prm/bin/python ]; then
    python3 -m venv .venv-prm
fi
.venv-prm/bin/pip install -q "torch==2.15.0" "transformers==5.23.0" "tokenizers==0.23.3" "trl==1.16.0" numpy safetensors
.venv-prm/bin/python tests/train/make_train_refs.py
.venv-prm/bin/python tests/train/make_kto_refs.py
.venv-prm/bin/python tests/train/make_optim_refs.py
