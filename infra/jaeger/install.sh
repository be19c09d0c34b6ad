#!/usr/bin/env bash
# Install Jaeger v2 (the unified `jaeger` binary, an OpenTelemetry Collector distribution) from its
# Go module with the local Go toolchain, cached outside the repository:
#   ~/.cache/recsys/jaeger/<module version>/jaeger    (RECSYS_CACHE_DIR overrides ~/.cache/recsys)
# A cached binary is reused: the build runs once per machine. Prints the binary's path.
#
# Version: Jaeger tags each release twice, v1.x for the legacy binaries and v2.x for the v2 one,
# but its go.mod has no /v2 suffix, so Go only accepts the v1.x tag. v1.75.0 is the same commit as
# Jaeger v2.12.0, and its cmd/jaeger is the v2 binary (`go list -m -versions
# github.com/jaegertracing/jaeger`; the jaegertracing/jaeger:2.12.0 image of docker-compose.yml).
# v1.75.0 is the approved release; newer tags are served but are not approved releases.
#
# `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0` is refused ("go.mod ... contains
# one or more replace directives"), so the module source is fetched with `go mod download` and
# `go install ./cmd/jaeger` runs inside it: Jaeger's own go.mod and go.sum then pin every
# dependency, exactly as in its release builds.
#
# Measured on the 2-core development machine: ~35 s to download, 217 s to compile (~4 min in all);
# 9 s with a warm Go build cache. Details in docs/operations.md ("Jaeger for tests and CI").
set -euo pipefail

version="${JAEGER_MODULE_VERSION:-v1.75.0}"
cache_root="${RECSYS_CACHE_DIR:-$HOME/.cache/recsys}"
dest="$cache_root/jaeger/$version"
binary="$dest/jaeger"

if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null 2>&1 || {
  echo "error: the Go toolchain (go) is not on PATH; install Go 1.24 or newer" >&2
  exit 1
}

# The toolchain on the machine builds it (Jaeger asks for go >= 1.24); never download another.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

# One build at a time per machine (CI jobs or test sessions started together): the second waits,
# then finds the binary.
mkdir -p "$cache_root/jaeger"
exec 9>"$cache_root/jaeger/.install.lock"
flock 9
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi

started=$(date +%s)
echo "building Jaeger $version from github.com/jaegertracing/jaeger (once per machine)..." >&2

module_dir=$(go mod download -json "github.com/jaegertracing/jaeger@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d "${TMPDIR:-/tmp}/jaeger-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# The module cache is read-only; build in a writable copy.
cp -R "$module_dir/." "$work/src"
chmod -R u+w "$work/src"

mkdir -p "$dest.partial"
(
  cd "$work/src"
  # -trimpath and no symbol tables: a smaller binary that does not embed this machine's paths.
  GOBIN="$dest.partial" go install -trimpath -ldflags "-s -w" ./cmd/jaeger
)
# Publish atomically: a concurrent or interrupted run never leaves a half-written binary.
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "built $binary in $(($(date +%s) - started)) s" >&2
echo "$binary"
