#!/usr/bin/env bash
# The Pulumi CLI the project runs (the real engine): a `pulumi` >= 3.181 already on PATH is
# used as it is; otherwise the CLI is built from its Go module at the version pinned in
# tools/pulumi-cli/go.mod (go.sum checks every module), CGO_ENABLED=0 with the release's
# flags (pulumi/pulumi .goreleaser.yml), into a per-version directory outside the clone,
# so a second `make` and later clones on this machine take seconds. Beside it goes the
# SDK's dynamic-provider plugin `pulumi-resource-pulumi-python` (from the sdk/v3 module),
# which runs the project's .venv Python (Pulumi.yaml `virtualenv: .venv`, passed to it
# as PULUMI_RUNTIME_VIRTUALENV).
# The Python language host is not built: the Go module proxy refuses its module (see
# README, "The Pulumi CLI"); pulumicli/ serves the program to the CLI in-process instead.
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_PATH_VERSION=3.181.0
version="$(sed -nE 's#^(require)?[[:space:]]*github\.com/pulumi/pulumi/pkg/v3 (v[0-9.]+)$#\2#p' tools/pulumi-cli/go.mod)"
[ -n "$version" ] || { echo "install-pulumi: no pkg/v3 version in tools/pulumi-cli/go.mod"; exit 1; }
dir="${PULUMI_CLI_DIR:-/opt/pe-compile-masters/pulumi/$version}"

if on_path="$(command -v pulumi 2>/dev/null)" && [ "$on_path" != "$dir/pulumi" ]; then
  have="$("$on_path" version 2>/dev/null | sed 's/^v//')"
  if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$MIN_PATH_VERSION" "$have" | sort -V | head -1)" = "$MIN_PATH_VERSION" ]; then
    echo "install-pulumi: using $on_path (v$have, on PATH); nothing built"
    exit 0
  fi
  echo "install-pulumi: $on_path is v${have:-?}, older than $MIN_PATH_VERSION: building $version instead"
fi

if [ -x "$dir/pulumi" ] && [ "$("$dir/pulumi" version 2>/dev/null)" = "$version" ] \
   && [ -x "$dir/pulumi-resource-pulumi-python" ]; then
  echo "install-pulumi: $dir/pulumi $version (built earlier)"
  exit 0
fi

command -v go >/dev/null || { echo "install-pulumi: Go is needed to build the Pulumi CLI (go 1.26+)"; exit 1; }
mkdir -p "$dir"
cd tools/pulumi-cli
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
echo "install-pulumi: downloading the modules of github.com/pulumi/pulumi/pkg/v3@$version (checked against go.sum)"
go mod download
echo "install-pulumi: building pulumi $version into $dir (first build: 3-20 min and up to 4 GB on 2 cores; later ones use Go's build cache)"
start=$(date +%s)
go build -trimpath -tags "osusergo grpcnotrace" \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
  -o "$dir/pulumi.new" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
mv "$dir/pulumi.new" "$dir/pulumi"
sdk="$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$dir/pulumi-resource-pulumi-python"
echo "install-pulumi: built $("$dir/pulumi" version) in $(( $(date +%s) - start )) s"
