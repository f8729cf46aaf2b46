#!/usr/bin/env bash
# Runs a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok as a fake kubelet) until Ctrl-C. Builds the binaries first if
# they are not cached yet (a cold build takes ~15 minutes).
#
#   hack/local-up.sh --workdir /tmp/pgops-cluster --env-file /tmp/pgops-cluster.env
#   source /tmp/pgops-cluster.env && kubectl get nodes   # in another shell
#
# Flags go to hack/localcluster (see `go run ./hack/localcluster --help`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-k8s-bins.sh"
source "$here/versions.sh"
export K8S_BIN_DIR
cd "$here/.."
# Build and exec rather than `go run`: a SIGTERM to `go run` kills only go itself and
# orphans the program, while this way every signal reaches the program, which tears
# the cluster down in order.
bin="$PGOPS_CACHE/bin/localcluster"
mkdir -p "$(dirname "$bin")"
go build -o "$bin" ./hack/localcluster
exec "$bin" "$@"
