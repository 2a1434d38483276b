#!/usr/bin/env bash
# Debian's `prometheus` package (prometheus and promtool), unpacked into
# .hookline/prometheus/ without installing it system-wide: `apt-get download` and `dpkg -x`
# need no root and start no service. Prints the folder holding the two binaries. A
# `prometheus` already on PATH (with promtool beside it) is used as it is.
#   scripts/prometheus.sh [-q] ensure
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
quiet=0
[[ ${1:-} == -q ]] && { quiet=1; shift; }
[[ ${1:-ensure} == ensure ]] || { echo "usage: scripts/prometheus.sh [-q] ensure" >&2; exit 2; }

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  dirname "$(command -v prometheus)"
  exit 0
fi
dest=$PWD/.hookline/prometheus
if [[ -x $dest/usr/bin/prometheus && -x $dest/usr/bin/promtool ]]; then
  echo "$dest/usr/bin"
  exit 0
fi
((quiet)) || echo "== prometheus: fetching Debian's prometheus package" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { (cd "$work" && apt-get download prometheus >/dev/null 2>&1); }
if ! fetch; then
  # No package lists yet (a fresh machine): read them once, as root only.
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq >/dev/null 2>&1 || true
  fi
  fetch || { echo "prometheus: apt-get download prometheus failed" >&2; exit 1; }
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg -x "$work"/prometheus_*.deb "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest/usr/bin"
