#!/usr/bin/env bash
# Regenerates everything derived from the API types in pkg/apis:
#   - deepcopy functions (zz_generated.deepcopy.go) and the typed clientset, listers and
#     informers under pkg/generated, with k8s.io/code-generator's kube_codegen.sh;
#   - the CRD YAML under manifests/crds, with controller-tools' CRD generator, so the schema
#     cannot disagree with the types.
# Versions come from go.mod, so every machine generates the same bytes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
module="$(go list -m)"
out="${CODEGEN_OUTPUT_ROOT:-$root}"

# code-generator is only a tool dependency: nothing else puts it in the module cache, and
# `go list -m -f {{.Dir}}` prints nothing for a module that is not there yet. Download it
# (the version go.mod pins) first, so a fresh machine generates as a warm one does.
go mod download k8s.io/code-generator
codegen_root="$(go list -m -f '{{.Dir}}' k8s.io/code-generator)"
if [ ! -f "$codegen_root/kube_codegen.sh" ]; then
  echo "k8s.io/code-generator not found in the module cache after download (got '$codegen_root')" >&2
  exit 1
fi
# kube_codegen.sh installs its generators into GOBIN; keep them out of the user's GOPATH.
export GOBIN="${PGOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgops}/codegen-bin"
mkdir -p "$GOBIN"
# shellcheck source=/dev/null
source "$codegen_root/kube_codegen.sh"

kube::codegen::gen_helpers \
  --boilerplate "$root/hack/boilerplate.go.txt" \
  "$root/pkg/apis"

kube::codegen::gen_client \
  --with-watch \
  --output-dir "$out/pkg/generated" \
  --output-pkg "$module/pkg/generated" \
  --boilerplate "$root/hack/boilerplate.go.txt" \
  "$root/pkg/apis"

mkdir -p "$out/manifests/crds"
go tool controller-gen crd:crdVersions=v1 paths=./pkg/apis/... output:crd:dir="$out/manifests/crds"
