#!/usr/bin/env bash
# Load on the reward paths (benches/reward_load.rs) with math-verify 0.9.0 in a process
# pool of 2 as the anchor (installed into .venv-bench from PyPI). 1,024 connections need
# more open files than the usual soft limit of 1,024, on the client and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 || true
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install -q "math-verify==0.9.0"
export STEPKTO_BENCH_PYTHON="$PWD/.venv-bench/bin/python"
exec cargo bench --bench reward_load
