#!/usr/bin/env bash
# Builds helm (HELM_VERSION, hack/versions.sh) from the Go module proxy into
# $PGOPS_CACHE/bin, where the chart tests (test/distribution) look for it. Idempotent: a
# helm there that reports the right version is not rebuilt. Needs only Go and the module
# proxy; helm stays out of pgops's go.mod (`go install pkg@version` builds it in a module
# of its own).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.sh"

bin_dir="$PGOPS_CACHE/bin"
helm="$bin_dir/helm"
if [ -x "$helm" ] && [ "$("$helm" version --template '{{.Version}}' 2>/dev/null || true)" = "$HELM_VERSION" ]; then
  echo "helm $HELM_VERSION present in $bin_dir"
  exit 0
fi
echo "building helm $HELM_VERSION into $bin_dir (a cold build, modules included, takes ~2 minutes on 2 cores)"
mkdir -p "$bin_dir"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0 GOWORK=off
# Outside any module, so nothing here reads or changes a go.mod.
tmp="$(mktemp -d "$bin_dir/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# The ldflags helm's own Makefile sets for a release. Without them a `go install`ed helm
# reports only "v3.22" (so the version check above would never pass), and its
# .Capabilities.KubeVersion and lint's deprecation checks assume Kubernetes v1.20 instead
# of the minor of the client-go it is built with.
gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")"   # v0.37.0
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

# Built next to the old binary and moved into place, so an interrupted build never leaves
# a broken helm behind.
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$tmp/helm" "$helm"
echo "helm $("$helm" version --template '{{.Version}}') ready in $bin_dir"
