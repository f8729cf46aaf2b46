#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) are
# installed: the credential engine and the local database pods run real servers.
# On Debian/Ubuntu it installs the `postgresql` package when they are missing.
set -euo pipefail

if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then
  echo "PostgreSQL server binaries: $PG_BINDIR"; exit 0
fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "PostgreSQL server binaries: $(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found. Install the PostgreSQL server package (15 or newer)" >&2
  echo "for your system, or set PG_BINDIR to the directory holding initdb and pg_ctl." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing the postgresql package (server binaries for the tests and the demo)"
# Keep the package from creating and starting a cluster of its own on port 5432: pgops
# starts its own throwaway servers.
$sudo mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
# Non-interactive, keeping that file: CI has no terminal to answer a conffile prompt.
export DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1
$sudo apt-get update -q
${sudo:+$sudo -E} apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql
ls /usr/lib/postgresql/*/bin/initdb
