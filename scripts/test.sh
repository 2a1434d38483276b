#!/usr/bin/env bash
# `make test`: unit tests and the end-to-end suite against a real Kafka broker started for
# this run (its own data folder and ports), stopped and removed afterwards whatever happens;
# and the fault suite (tests/faults), which needs no shared broker: each of its tests starts,
# SIGKILLs and restarts Kafka nodes of its own with scripts/kafka.sh (one node, or a 3-node
# cluster, under .hookline/faults-*, removed afterwards), runs the service binaries built here
# as processes, and runs alone (about 5 minutes in all). Extra arguments go to cargo test, e.g.
# `scripts/test.sh -p hookline-tests --test faults` for the fault suite alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The suites' brokers are plaintext unless a test asks otherwise (tests/security does).
unset KAFKA_SECURITY
mkdir -p .hookline
dir=$(mktemp -d "$PWD/.hookline/test-kafka.XXXXXX")
cleanup() {
  scripts/kafka.sh stop --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The router's end-to-end tests publish with a producer that is not Hookline's code: Python
# confluent-kafka (its wheel ships librdkafka).
if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
  echo "== test: installing Python confluent-kafka (external-producer test)"
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages confluent-kafka
fi
# The ed25519 test verifies `v1a` signatures with an independent library: Python
# `cryptography`.
if ! python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' 2>/dev/null; then
  echo "== test: installing Python cryptography (ed25519 verifier)"
  python3 -m pip install --quiet --disable-pip-version-check cryptography 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages cryptography
fi
# Debian's Prometheus for the metrics test (tests/e2e/observability.rs), unpacked once
# into .hookline/prometheus.
HOOKLINE_PROMETHEUS_BIN=$(scripts/prometheus.sh ensure)
export HOOKLINE_PROMETHEUS_BIN
# The official Svix SDKs (PyPI and npm) for the Svix face's tests (tests/e2e/svix_sdk.rs),
# under .hookline/, installed once.
HOOKLINE_SVIX_PYTHON=$(scripts/svix-sdk.sh ensure)
HOOKLINE_SVIX_NPM=$(scripts/svix-sdk.sh ensure-npm)
export HOOKLINE_SVIX_PYTHON HOOKLINE_SVIX_NPM
echo "== test: building (the first build compiles librdkafka and takes several minutes)"
cargo build --workspace --all-targets --locked
# Kafka's jars, once, before any test starts a broker (the fault suite starts its own).
scripts/kafka.sh -q fetch
echo "== test: starting a Kafka broker for this run"
HOOKLINE_TEST_KAFKA_BOOTSTRAP=$(scripts/kafka.sh start --dir "$dir" --heap 768m)
export HOOKLINE_TEST_KAFKA_BOOTSTRAP
# The broker's folder (log segments under data/): tests scan it for plaintext secrets.
export HOOKLINE_TEST_KAFKA_DIR="$dir"
echo "== test: cargo test (broker at $HOOKLINE_TEST_KAFKA_BOOTSTRAP)"
log="$dir/cargo-test.log"
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo prints a result line per test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
