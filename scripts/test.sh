#!/usr/bin/env bash
# The project's test command (README, CI): installs the test dependencies, builds the
# binaries the integration tests run, then runs the whole workspace's tests.
#
#   bash scripts/test.sh                      # everything
#   bash scripts/test.sh -p pgvault-tests     # extra arguments go to `cargo test`
#   PGVAULT_TEST_PG_VERSIONS=15,18 bash scripts/test.sh   # locally only: ignored when CI is set
#
# With CI set (non-empty; .ci/run exports CI=1) a test whose dependency is missing fails
# instead of skipping. Integration tests refuse binaries older than the sources; this script
# builds them first.
#
# Each integration test starts its own PostgreSQL server, so tests run 2 at a time on these
# 2-core machines (override with RUST_TEST_THREADS). The exit code is cargo test's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$SECONDS
bash scripts/install-test-deps.sh
# shellcheck source=/dev/null
source .deps/env.sh
echo "test deps ready in $((SECONDS - t0))s" >&2

if [[ -n "${CI:-}" ]]; then
  # A fresh clone builds from scratch: incremental artifacts are pure overhead.
  export CARGO_INCREMENTAL=0
fi
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

t1=$SECONDS
# Cargo builds only the binaries of the package under test; the integration tests in tests/
# run target/debug/pgvault and pgvault-archive, so build them first.
cargo build --workspace --bins
echo "binaries built in $((SECONDS - t1))s" >&2

# --no-fail-fast: one failing test binary must not hide the results of the others.
exec cargo test --workspace --no-fail-fast "$@"
