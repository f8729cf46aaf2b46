# Versions of the tools that hack/ scripts build into the cache. Sourced, not run.
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
KUBE_STAGING_VERSION="v0${KUBE_VERSION#v1}"   # v1.37.2 -> v0.37.2 for the staging modules
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"   # hack/install-node.sh; test/kubenode runs it
HELM_VERSION="${HELM_VERSION:-v3.22.0}"   # hack/install-helm.sh; the chart tests use it
PGOPS_CACHE="${PGOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgops}"
K8S_BIN_DIR="${K8S_BIN_DIR:-$PGOPS_CACHE/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin}"
CONTAINERD_BIN_DIR="${CONTAINERD_BIN_DIR:-$PGOPS_CACHE/containerd-$CONTAINERD_VERSION/bin}"
NODE_IMAGE_DIR="${NODE_IMAGE_DIR:-$PGOPS_CACHE/node-images}"
