#!/usr/bin/env bash
# The whole test suite, on any machine with the Rust toolchain.
#
# PostgreSQL for the database tests, in this order: $DATABASE_URL if set; else the server on
# 127.0.0.1:5432 if it answers; else a throwaway cluster started here with the installed
# binaries (installing Debian's postgresql package first when it is missing and we are root).
# PostgreSQL refuses to run as root, so the cluster runs as the `postgres` user.
#
# Chromium and ChromeDriver for the dashboard's browser test (tests/dashboard.rs): Debian's
# `chromium` and `chromium-driver`, installed here when missing and we are root. A missing
# browser then fails that test instead of skipping it.
#
# Then the Python client's tests (python/tests) against the binary cargo built, in a venv
# made here (.venv-client; httpx and pytest from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

started_dir=""
started_root=""
cleanup() {
    if [ -n "${STEPKTO_TEST_PG:-}" ] && [ -z "$started_dir" ] && command -v psql >/dev/null 2>&1; then
        # Drop the per-test databases the suite created on a shared server.
        for db in $(psql "$STEPKTO_TEST_PG" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'stepkto_t%'" 2>/dev/null); do
            psql "$STEPKTO_TEST_PG" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
        done
    fi
    if [ -n "$started_dir" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$started_dir" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$started_root"
    fi
    rm -rf "${TMPDIR:-/tmp}/stepkto-tests"
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -n "${DATABASE_URL:-}" ] && [[ "$DATABASE_URL" == postgres* ]]; then
    export STEPKTO_TEST_PG="$DATABASE_URL"
elif port_open 127.0.0.1 5432; then
    export STEPKTO_TEST_PG="postgres://postgres@127.0.0.1:5432/postgres"
else
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$PG_BIN" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing postgresql (Debian package)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    if [ -z "$PG_BIN" ]; then
        echo "test.sh: no PostgreSQL found (set DATABASE_URL, run one on 127.0.0.1:5432, or install postgresql)" >&2
        exit 1
    fi
    started_root=$(mktemp -d /tmp/stepkto-pg.XXXXXX)
    started_dir="$started_root"
    [ "$(id -u)" = 0 ] && chown postgres "$started_root"
    port=$((20000 + RANDOM % 20000))
    as_pg "$PG_BIN/initdb" -D "$started_root/data" -A trust -U postgres >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$started_root/data" -l "$started_root/log" -w \
        -o "-p $port -k $started_root -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    started_dir="$started_root/data"
    export STEPKTO_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
    echo "test.sh: started a throwaway PostgreSQL on port $port" >&2
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing chromium and chromium-driver (Debian packages)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
    fi
fi
export STEPKTO_REQUIRE_BROWSER=1
export STEPKTO_REQUIRE_PG=1
cargo test --locked "$@"

if [ ! -x .venv-client/bin/pytest ]; then
    python3 -m venv .venv-client
fi
.venv-client/bin/pip install -q -e 'python[test]'
STEPKTO_BIN="$PWD/target/debug/stepkto" .venv-client/bin/pytest -q python/tests
