#!/usr/bin/env bash
# `make demo`: builds what is missing, then runs the whole of pgops on a local control
# plane (hack/demo). Ctrl-C tears everything down. Pass --wait=false to exit after the story.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-postgres.sh"
"$here/install-k8s-bins.sh"
"$here/install-node.sh"
source "$here/versions.sh"
export K8S_BIN_DIR
cd "$here/.."
bin="$PGOPS_CACHE/bin/pgops-demo"
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./hack/demo
# exec, so Ctrl-C and SIGTERM reach the demo, which tears down in order.
exec "$bin" "$@"
