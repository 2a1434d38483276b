#!/usr/bin/env bash
# `make conformance`: every service's OpenAPI document against the service, with
# schemathesis (PyPI) and all of its checks, on a stack of its own (its own Kafka, data and
# ports under .hookline/conformance.*, removed afterwards). Any failure fails the run.
# Schemathesis lives in a virtual environment under .hookline/, installed on first use.
# SCHEMATHESIS_MAX_EXAMPLES (default 25) bounds the examples per operation and phase;
# CONFORMANCE_SERVICES (e.g. "DEAD_LETTERS API") checks only those; SVIX is the subscription
# API's Svix-compatible face, whose document is $HOOKLINE_API_URL/api/v1/openapi.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=$PWD/.hookline/schemathesis-$SCHEMATHESIS_VERSION
if ! "$venv/bin/st" --version >/dev/null 2>&1; then
  echo "== conformance: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

mkdir -p .hookline
state=$(mktemp -d "$PWD/.hookline/conformance.XXXXXX")
cleanup() {
  HOOKLINE_STATE_DIR=$state scripts/stack.sh clean >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A stack of its own: nothing from the caller's shell points it elsewhere.
unset HOOKLINE_KAFKA_BOOTSTRAP HOOKLINE_CONFIG
# "Send an example" makes real deliveries to the fuzzed endpoint URLs: names are not looked
# up (an attempt to a name fails at once), so nothing leaves the machine, not even a DNS query.
HOOKLINE_EGRESS_DNS=false HOOKLINE_STATE_DIR=$state scripts/stack.sh up
# shellcheck disable=SC1091
. "$state/stack.env"

failed=()
for service in ${CONFORMANCE_SERVICES:-API SVIX EXTRACTS DEAD_LETTERS ROUTER WORKER}; do
  case $service in
    SVIX) doc=$HOOKLINE_API_URL/api/v1/openapi.json ;;
    *) var=HOOKLINE_${service}_URL; doc=${!var}/openapi.json ;;
  esac
  echo "== conformance: $service ($doc)"
  if ! "$venv/bin/st" run "$doc" \
    --checks all \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
    --header "Authorization: Bearer $HOOKLINE_TENANT_A_TOKEN" \
    --request-timeout 30 \
    --seed 1 \
    --no-color \
    --report junit --report-dir "$state/reports-$service"; then
    failed+=("$service")
  fi
done
if ((${#failed[@]})); then
  echo "conformance: schemathesis found failures in: ${failed[*]}" >&2
  exit 1
fi
echo "conformance: every service conforms to its OpenAPI document"
