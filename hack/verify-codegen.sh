#!/usr/bin/env bash
# Fails when the generated code or the CRD YAML differs from what hack/update-codegen.sh
# would write from the current API types. It regenerates into a scratch copy of the tree,
# so the working tree is never touched.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

tar -C "$root" --exclude=.git -cf - . | tar -C "$scratch" -xf -
"$scratch/hack/update-codegen.sh" >/dev/null

status=0
for path in pkg/generated pkg/apis manifests/crds; do
  if ! diff -ruN "$root/$path" "$scratch/$path"; then
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "generated code is out of date: run hack/update-codegen.sh" >&2
  exit 1
fi
echo "generated code and CRDs are up to date"
