#!/usr/bin/env bash
# Regenerate the tiny PRM fixtures and their transformers reference scores
# (tests/data/prm/). Installs the pinned versions recorded in expected.json into .venv-prm
# on first use (PyPI), then runs tests/prm/make_tiny_prms.py with the given arguments
# (e.g. `--only math-shepherd-bpe`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-prm/bin/python ]; then
    python3 -m venv .venv-prm
fi
.venv-prm/bin/pip install -q "torch==2.15.0" "transformers==5.23.0" "tokenizers==0.23.3" numpy safetensors
exec .venv-prm/bin/python tests/prm/make_tiny_prms.py "$@"
