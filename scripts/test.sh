#!/usr/bin/env bash
# `make test`: unit tests and the end-to-end suite against a real Kafka broker started for
# this run (its own data folder and ports), stopped and removed afterwards whatever happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mkdir -p .hookline
dir=$(mktemp -d "$PWD/.hookline/test-kafka.XXXXXX")
cleanup() {
  scripts/kafka.sh stop --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== test: building (the first build compiles librdkafka and takes several minutes)"
cargo build --workspace --all-targets --locked
echo "== test: starting a Kafka broker for this run"
HOOKLINE_TEST_KAFKA_BOOTSTRAP=$(scripts/kafka.sh start --dir "$dir" --heap 768m)
export HOOKLINE_TEST_KAFKA_BOOTSTRAP
echo "== test: cargo test (broker at $HOOKLINE_TEST_KAFKA_BOOTSTRAP)"
log="$dir/cargo-test.log"
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo prints a result line per test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
