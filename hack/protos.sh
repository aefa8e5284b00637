#!/usr/bin/env bash
# Generates proto/**.pb.go from proto/**.proto with the pinned generators,
# the ones containerd uses: google.golang.org/protobuf's protoc-gen-go and
# protoc-gen-go-ttrpc, under Debian's protoc.
#
#   hack/protos.sh          regenerate in place (make protos)
#   hack/protos.sh --check  regenerate into a temp copy and fail, showing the
#                           diff, if any committed file differs (make lint)
#
# The generated files name the .proto paths relative to proto/, so a copy of
# proto/ elsewhere generates the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_TTRPC=github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

if ! command -v protoc >/dev/null; then
	echo "protos: protoc is missing; make deps installs it (protobuf-compiler)" >&2
	exit 1
fi

# The generators go to a dir of their own, so a different version of either
# elsewhere on PATH cannot be the one protoc runs.
gobin="$(go env GOPATH)/bin/corral-protoc"
GOBIN="$gobin" go install "$PROTOC_GEN_GO"
GOBIN="$gobin" go install "$PROTOC_GEN_GO_TTRPC"
export PATH="$gobin:$PATH"

generate() { # generate SRC: writes the .pb.go files beside SRC's .proto files
	local src=$1 files
	files=$(cd "$src" && find . -name '*.proto' | sed 's|^\./||' | sort)
	if [ -z "$files" ]; then
		echo "protos: no .proto files under $src" >&2
		return 0
	fi
	# shellcheck disable=SC2086 # one word per file
	(cd "$src" && protoc -I . --go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. $files)
}

if [ "$check" = 0 ]; then
	generate proto
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R proto "$tmp/committed"
cp -R proto "$tmp/generated"
find "$tmp/generated" -name '*.pb.go' -delete
generate "$tmp/generated"
if ! (cd "$tmp" && diff -r -u committed generated) >&2; then
	echo "protos: the generated code under proto/ differs from what make protos makes; run it and commit the result" >&2
	exit 1
fi
