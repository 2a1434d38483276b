#!/usr/bin/env bash
# The official Svix SDKs, pinned and unchanged, installed on first use under .hookline/ as
# schemathesis is (see scripts/conformance.sh), for the Svix face's end-to-end tests
# (tests/e2e/svix_sdk.rs runs tests/sdk/svix_flow.py and tests/sdk/svix_flow.mjs):
#   scripts/svix-sdk.sh ensure       PyPI `svix` in a venv; prints the venv's python
#   scripts/svix-sdk.sh ensure-npm   npm `svix`; prints the folder holding its node_modules
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SVIX_PYPI_VERSION=2.9.1
SVIX_NPM_VERSION=2.5.0
case ${1:-ensure} in
  ensure)
    venv=$PWD/.hookline/svix-sdk-$SVIX_PYPI_VERSION
    if ! "$venv/bin/python" -c 'import svix.api, svix.webhooks' >/dev/null 2>&1; then
      echo "== svix sdk: installing svix $SVIX_PYPI_VERSION (PyPI) into $venv" >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
      "$venv/bin/pip" install --quiet --disable-pip-version-check "svix==$SVIX_PYPI_VERSION" >&2
    fi
    echo "$venv/bin/python"
    ;;
  ensure-npm)
    dir=$PWD/.hookline/svix-sdk-npm-$SVIX_NPM_VERSION
    if [[ ! -f $dir/node_modules/svix/dist/index.mjs ]]; then
      command -v npm >/dev/null || { echo "svix sdk: npm (Node 20) is required" >&2; exit 1; }
      echo "== svix sdk: installing svix $SVIX_NPM_VERSION (npm) into $dir" >&2
      rm -rf "$dir"
      mkdir -p "$dir"
      npm install --prefix "$dir" --no-audit --no-fund --silent "svix@$SVIX_NPM_VERSION" >&2
    fi
    echo "$dir"
    ;;
  *)
    echo "usage: scripts/svix-sdk.sh ensure|ensure-npm" >&2
    exit 2
    ;;
esac
