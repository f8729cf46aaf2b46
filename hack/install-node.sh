#!/usr/bin/env bash
# Installs what test/kubenode's real nodes run besides the kubelet and kube-proxy
# (hack/install-k8s-bins.sh builds those):
#   - Debian packages: runc, the CNI plugins (bridge, host-local, loopback, portmap),
#     iptables, conntrack, iproute2, procps, and mmdebstrap for the PostgreSQL image;
#   - containerd, its runc shim and ctr, built from the Go module proxy into
#     CONTAINERD_BIN_DIR (Kubernetes 1.35 was the last release to support containerd 1.x,
#     so Debian's 1.6 will not do);
#   - the images, built offline into NODE_IMAGE_DIR: PostgreSQL 15 from Debian's packages
#     in the official image's layout (user postgres uid 999, the server binaries on PATH,
#     /var/run/postgresql), and the pod sandbox image from hack/pause.
# Idempotent: what is already there is kept (the sandbox image is rebuilt: it is small,
# and follows hack/pause).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/versions.sh"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Debian packages, by a file each installs.
missing=()
for want in /usr/sbin/runc:runc /usr/lib/cni/bridge:containernetworking-plugins /usr/sbin/iptables:iptables \
  /usr/sbin/conntrack:conntrack /usr/bin/mmdebstrap:mmdebstrap /usr/sbin/ip:iproute2 /usr/sbin/sysctl:procps; do
  [ -e "${want%%:*}" ] || missing+=("${want#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "real nodes need the packages ${missing[*]}; install them for your system" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (real nodes)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  ${sudo:+$sudo -E} apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$NODE_IMAGE_DIR"
rootfs="$NODE_IMAGE_DIR/postgres-15-rootfs.tar"
rootfs_pid=""
if [ ! -s "$rootfs" ] && [ ! -s "$NODE_IMAGE_DIR/postgres-15.tar" ]; then
  # mmdebstrap mostly waits for downloads: it runs while containerd compiles.
  echo "building the PostgreSQL 15 root file system with mmdebstrap (about 2 minutes)"
  (
    # minbase has no adduser: the user comes first, with the official image's ids, so
    # postgresql-common's postinst finds it. The package's default cluster is removed:
    # pods make their own data directory.
    $sudo mmdebstrap --variant=minbase --format=tar --include=postgresql-15 \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --essential-hook='echo "postgres:x:999:" >> "$1/etc/group"; echo "postgres:!::" >> "$1/etc/gshadow"; echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >> "$1/etc/passwd"; echo "postgres:*:19000:0:99999:7:::" >> "$1/etc/shadow"' \
      --customize-hook='rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      --customize-hook='mkdir -p "$1"/var/run/postgresql "$1"/var/lib/postgresql/data && chown 999:999 "$1"/var/run/postgresql "$1"/var/lib/postgresql/data && chmod 3777 "$1"/var/run/postgresql && chmod 0700 "$1"/var/lib/postgresql/data' \
      bookworm "$rootfs.tmp" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" > "$NODE_IMAGE_DIR/mmdebstrap.log" 2>&1 &&
      mv "$rootfs.tmp" "$rootfs"
  ) &
  rootfs_pid=$!
fi

if [ ! -x "$CONTAINERD_BIN_DIR/containerd" ] || [ ! -x "$CONTAINERD_BIN_DIR/containerd-shim-runc-v2" ] || [ ! -x "$CONTAINERD_BIN_DIR/ctr" ]; then
  echo "building containerd $CONTAINERD_VERSION into $CONTAINERD_BIN_DIR (about 3 minutes on 2 cores)"
  mkdir -p "$CONTAINERD_BIN_DIR"
  # Static, and without the btrfs, devmapper and zfs snapshotters (cgo, and unused).
  (cd "$root" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$CONTAINERD_BIN_DIR" \
    go install -tags "no_btrfs no_devmapper no_zfs" \
      "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION")
fi

if [ -n "$rootfs_pid" ]; then
  if ! wait "$rootfs_pid"; then
    echo "mmdebstrap failed; its log:" >&2
    tail -30 "$NODE_IMAGE_DIR/mmdebstrap.log" >&2
    exit 1
  fi
fi

args=(--pause-ref pgops.local/pause:3.10 --out-dir "$NODE_IMAGE_DIR")
if [ ! -s "$NODE_IMAGE_DIR/postgres-15.tar" ]; then
  args+=(--postgres-rootfs "$rootfs" --postgres-ref pgops.local/postgres:15 --postgres-major 15)
fi
(cd "$root" && go run ./hack/nodeimages "${args[@]}")
# The archive holds the root file system, compressed.
rm -f "$rootfs"
echo "real node: containerd $CONTAINERD_VERSION in $CONTAINERD_BIN_DIR, images in $NODE_IMAGE_DIR"
