#!/usr/bin/env bash
# Installs what `make deploy-check` needs, into deploy/.tools/ (git-ignored), once:
#   - kustomize, built from source with the machine's Go (`go install`);
#   - a Python venv with kubernetes-validate (the Kubernetes OpenAPI schemas), PyYAML and
#     hadolint (tools/requirements.txt).
# Idempotent: whatever is already there at the pinned version is skipped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/.tools"
mkdir -p "$tools/bin"

# The newest kustomize whose go.mod accepts Go 1.26 (v5.8.3 requires Go 1.27). Raise it
# together with the Go toolchain.
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
kustomize="$tools/bin/kustomize"
if [[ ! -x "$kustomize" ]] || ! "$kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"; then
  go_version=$(go env GOVERSION 2>/dev/null || true)
  if ! [[ $go_version =~ ^go1\.([0-9]+) ]] || ((BASH_REMATCH[1] < 24)); then
    echo "deploy: kustomize $KUSTOMIZE_VERSION is built with Go >= 1.24; found '${go_version:-no go}'" >&2
    exit 1
  fi
  echo "== deploy: installing kustomize $KUSTOMIZE_VERSION (go install; a minute or two)"
  # GOTOOLCHAIN=local: build with this Go, never download another toolchain.
  GOBIN="$tools/bin" GOTOOLCHAIN=local GOFLAGS= \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

venv="$tools/venv"
req="$here/tools/requirements.txt"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$req" "$stamp"; then
  echo "== deploy: installing Python tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
