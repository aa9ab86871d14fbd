#!/usr/bin/env bash
# Runs zeroDB's whole test suite: unit and property tests, then integration
# tests that start their own MariaDB servers and drive the real proxy with
# the mariadb CLI, sysbench and Python drivers; then the structure checks
# (no module cycle, typed errors: scripts/check-structure.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# The failover tests run the keeper and agent binaries too: build them all.
cargo build --workspace --locked --features zerodb-keeper/fault-points
cargo test --workspace --locked --features zerodb-keeper/fault-points "$@"
scripts/check-structure.sh
