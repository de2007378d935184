#!/usr/bin/env bash
# Benchmark the outcome checker against math-verify 0.9.0 (installed into .venv-bench).
# Needs ../shared/data (MATH-500 and the Math-Verify pairs); says so when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d ../shared/data ]; then
    echo "bench_outcome: ../shared/data is absent (the benchmark reads MATH-500 and the pairs from it)" >&2
    exit 1
fi
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install -q "math-verify==0.9.0"
cargo build --release --locked -q
.venv-bench/bin/python scripts/bench_outcome.py target/release/stepkto
