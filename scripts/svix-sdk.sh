#!/usr/bin/env bash
# The official Svix Python SDK (PyPI `svix`, pinned), unchanged, in a virtual environment
# under .hookline/svix-sdk-<version>/, installed on first use as schemathesis is (see
# scripts/conformance.sh). Prints the environment's python. The Svix face's end-to-end test
# (tests/e2e/svix_sdk.rs) runs tests/sdk/svix_flow.py with it.
#   scripts/svix-sdk.sh ensure
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ ${1:-ensure} == ensure ]] || { echo "usage: scripts/svix-sdk.sh ensure" >&2; exit 2; }

SVIX_SDK_VERSION=2.9.1
venv=$PWD/.hookline/svix-sdk-$SVIX_SDK_VERSION
if ! "$venv/bin/python" -c 'import svix.api, svix.webhooks' >/dev/null 2>&1; then
  echo "== svix sdk: installing svix $SVIX_SDK_VERSION (PyPI) into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "svix==$SVIX_SDK_VERSION" >&2
fi
echo "$venv/bin/python"
