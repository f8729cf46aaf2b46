#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy into a cache outside
# the checkout (K8S_BIN_DIR), so a fresh clone reuses them: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, and the nodes' kubelet and
# kube-proxy (test/kubenode). Idempotent: a binary already in the cache is not rebuilt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.sh"

kube=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
want=(etcd "${kube[@]}" kwok)
missing=()
for b in "${want[@]}"; do [ -x "$K8S_BIN_DIR/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "control-plane binaries present in $K8S_BIN_DIR"
  exit 0
fi
echo "building ${missing[*]} into $K8S_BIN_DIR (a cold build takes ~15 minutes on 2 cores)"
mkdir -p "$K8S_BIN_DIR"
work="$PGOPS_CACHE/build"
mkdir -p "$work"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

need() { [[ " ${missing[*]} " == *" $1 "* ]]; }

need_kube=false
for b in "${kube[@]}"; do if need "$b"; then need_kube=true; fi; done
if $need_kube; then
  mod="$work/kube-$KUBE_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    go mod download "k8s.io/kubernetes@$KUBE_VERSION"
    kgomod="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/go.mod"
    {
      echo "module pgops-k8sbins"
      echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/').0"
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo "replace ("
      # Every staging module k8s.io/kubernetes replaces with ./staging/... gets the published
      # version of the same minor instead.
      awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} r&&/=>/{print $1}' "$kgomod" |
        while read -r m; do echo "  $m => $m $KUBE_STAGING_VERSION"; done
      echo ")"
    } > go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    [ -f go.sum ] || go mod tidy -e >/dev/null 2>&1 || true
    go mod tidy
    # Without these the binaries report version v0.0.0-master (kubelet registers its
    # Node with it).
    minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    # One go build for all of them: on 2 cores, its compiles and links overlap.
    pkgs=()
    for b in "${kube[@]}"; do if need "$b"; then pkgs+=("k8s.io/kubernetes/cmd/$b"); fi; done
    echo "  go build ${pkgs[*]##*/}"
    out="$(mktemp -d "$K8S_BIN_DIR/.build-XXXXXX")"
    go build -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
    for p in "${pkgs[@]}"; do mv "$out/${p##*/}" "$K8S_BIN_DIR/"; done
    rmdir "$out"
  )
fi

if need etcd; then
  mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    cat > go.mod <<GOMOD
module pgops-etcd
go 1.24.0
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod tidy
    echo "  go build etcd"
    go build -o "$K8S_BIN_DIR/etcd.tmp" .
    mv "$K8S_BIN_DIR/etcd.tmp" "$K8S_BIN_DIR/etcd"
  )
fi

if need kwok; then
  echo "  go install kwok"
  GOBIN="$K8S_BIN_DIR" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
echo "control-plane binaries ready in $K8S_BIN_DIR"
