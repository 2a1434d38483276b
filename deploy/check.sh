#!/usr/bin/env bash
# deploy/check.sh check   render every kustomization, validate every object offline against
#                         the Kubernetes schemas, lint the Dockerfile, test the manifests
#                         (`make deploy-check`)
# deploy/check.sh render [DIR]
#                         print one kustomization's YAML (default: overlays/production;
#                         `make deploy-render`)
# Tools come from tools/install.sh (run first, skipped when present).
# DEPLOY_DIR (default: this folder) and REPO_DIR (default: its parent) let the check run
# over a copy, e.g. a deliberately broken one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="${DEPLOY_DIR:-$here}"
repo="${REPO_DIR:-$(dirname "$here")}"
tools="$here/.tools"
# The Kubernetes release whose OpenAPI schemas every object must satisfy (strict: unknown
# fields are errors). kubernetes-validate ships the schemas; see tools/requirements.txt.
K8S_VERSION="${K8S_VERSION:-1.37.0}"
# What `check` renders: both overlays, and the example with the optional CRD components.
RENDERS=(overlays/dev overlays/production examples/operators)

install() { "$here/tools/install.sh" >&2; }

render() {
  "$tools/bin/kustomize" build "$deploy/$1"
}

case "${1:-check}" in
  render)
    install
    render "${2:-overlays/production}"
    ;;
  check)
    install
    out="$deploy/.out"
    rm -rf "$out" && mkdir -p "$out"
    files=()
    for r in "${RENDERS[@]}"; do
      f="$out/$(basename "$r").yaml"
      render "$r" > "$f"
      files+=("$f")
    done
    echo "== deploy: rendered ${RENDERS[*]}"
    # Every step runs; the test counts the earlier steps' exit statuses in its closing line.
    lint=0
    "$tools/venv/bin/hadolint" --no-color --config "$here/.hadolint.yaml" "$deploy/Dockerfile" || lint=$?
    [[ $lint == 0 ]] && echo "hadolint: deploy/Dockerfile clean"
    schemas=0
    "$tools/venv/bin/python" "$here/tests/validate.py" --kubernetes-version "$K8S_VERSION" "${files[@]}" || schemas=$?
    "$tools/venv/bin/python" "$here/tests/test_manifests.py" --deploy "$deploy" --repo "$repo" \
      --step "hadolint=$lint" --step "schemas=$schemas" "${files[@]}"
    ;;
  *)
    echo "usage: $0 check | render [kustomization dir]" >&2
    exit 2
    ;;
esac
