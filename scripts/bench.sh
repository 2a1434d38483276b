#!/usr/bin/env bash
# `make bench`: throughput, latency and memory of the whole pipeline. Builds the release
# binaries, starts a Kafka broker for this run (own data folder, free ports), runs
# hookline-bench (the five services as separate processes, a verifying webhook receiver, an
# open-loop load generator), writes bench/results/<UTC timestamp>/report.{md,json} (and the
# services' logs), and stops the broker whatever happens. A benchmark, not a test: it is not
# part of `make test`.
#
#   BENCH_QUICK=1 make bench          the short version of every scenario (about 2 minutes)
#   BENCH_SCENARIOS=2,4 make bench    a subset, in that order (6 idle, 1 max rate and
#                                     overload, 2 fixed 5,000/s, 3 fan-out, 4 faulty
#                                     endpoints, 5 extract of 1,000,000 rows, 7 soak,
#                                     8 Svix message ingest)
#   BENCH_SVIX_URL=http://127.0.0.1:8071 BENCH_SVIX_TOKEN=... BENCH_SCENARIOS=8 make bench
#                                     scenario 8 against a Svix server instead (on this
#                                     machine, allowed to deliver to 127.0.0.1;
#                                     BENCH_SVIX_PIDS adds its processes' CPU)
#   BENCH_SOAK=1 make bench           add the 30-minute soak after the others (alone:
#                                     BENCH_SOAK=1 BENCH_SCENARIOS=7; BENCH_SOAK_MINUTES,
#                                     BENCH_SOAK_RATE events/s, default 2,000)
#   BENCH_BASELINE=bench/results/X    compare with an earlier report in report.md
#   BENCH_PROFILE=router:perf         profile one service (`make profile`; perf or callgrind)
#   HOOKLINE_KAFKA_FULL_JIT=1         the broker's JVM with C2 (default: C1 only, fast start)
#   KAFKA_SECURITY=sasl_ssl           the broker with a SASL_SSL listener and ACLs; every client
#                                     (services, load, readers) connects over TLS with
#                                     SCRAM-SHA-512 as the broker's `admin` (the bench's topics
#                                     carry a run prefix the principal table does not grant)
# Extra arguments go to hookline-bench (`target/release/hookline-bench --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/$stamp
mkdir -p "$out" .hookline
dir=$(mktemp -d "$PWD/.hookline/bench-kafka.XXXXXX")
cleanup() {
  scripts/kafka.sh stop --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== bench: building the release binaries"
cargo build --release --locked -p hookline -p hookline-subscription-api \
  -p hookline-extract-producer -p hookline-router -p hookline-delivery-worker \
  -p hookline-dead-letter -p hookline-bench
echo "== bench: starting a Kafka broker for this run"
# HOOKLINE_KAFKA_FULL_JIT=1 runs the broker with its JVM's full JIT, as in production
# (by default it stops at C1, like the tests' brokers, as in every report so far).
security=${KAFKA_SECURITY:-plaintext}
case $security in plaintext | sasl_ssl) ;; *) echo "KAFKA_SECURITY takes plaintext or sasl_ssl" >&2; exit 2 ;; esac
bootstrap=$(HOOKLINE_KAFKA_QUIET=1 scripts/kafka.sh start --dir "$dir" --heap 1g --security "$security")
command="make bench"
if [[ $security == sasl_ssl ]]; then
  # The services inherit these; hookline-bench's own clients read them too.
  export HOOKLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL HOOKLINE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
  export HOOKLINE_KAFKA_SASL_USERNAME=admin HOOKLINE_KAFKA_SASL_PASSWORD_FILE=$dir/secrets/admin.password
  HOOKLINE_KAFKA_SSL_CA_FILE=$(sed -n 's/^HOOKLINE_KAFKA_SSL_CA_FILE=//p' "$dir/client.env")
  export HOOKLINE_KAFKA_SSL_CA_FILE
  command="KAFKA_SECURITY=sasl_ssl $command"
fi
[[ -n ${BENCH_SCENARIOS:-} ]] && command="BENCH_SCENARIOS=$BENCH_SCENARIOS $command"
[[ -n ${BENCH_SOAK:-} ]] && command="BENCH_SOAK=$BENCH_SOAK $command"
[[ -n ${BENCH_QUICK:-} ]] && command="BENCH_QUICK=$BENCH_QUICK $command"
echo "== bench: running (broker at $bootstrap, results in $out)"
target/release/hookline-bench --bootstrap "$bootstrap" --kafka-pid "$(cat "$dir/kafka.pid")" \
  --out "$out" --command "$command" "$@"
ln -sfn "$stamp" bench/results/latest
echo "== bench: report in $out/report.md"
