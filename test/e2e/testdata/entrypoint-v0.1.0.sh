#!/bin/bash
# pgops database pod entrypoint (docs/architecture.md, "The database pod").
#
# Ordinal 0 of the StatefulSet is the primary, higher ordinals are streaming standbys.
#
# Environment:
#   POSTGRES_USER, POSTGRES_PASSWORD  superuser credential (from the auth Secret)
#   PGDATA                            data directory, e.g. /var/pv/data
#   POD_NAME                          <statefulset>-<ordinal>
#   POD_IP                            the pod's address (for the log)
#   PRIMARY_HOST                      standbys: where the primary is (primary Service ClusterIP)
#   PRIMARY_PORT                      port of PRIMARY_HOST (the primary Service's first port),
#                                     default 5432
#   STANDBY_MODE                      Hot (read-only queries on standbys) or Warm
#
# PostgreSQL listens on all the pod's addresses, on PGPORT if set (postgres reads it
# itself), else 5432.
#
# Files: the Unix socket and lock file go to /var/run/postgresql (a writable emptyDir; the
# root file system is read-only), where psql looks by default, so `kubectl exec <pod> --
# psql -U postgres` works: local connections of the OS user postgres (uid 999 in the
# official images) authenticate by peer as postgres or as the superuser. While this script
# prepares the data directory it keeps /var/run/postgresql/pgops-preparing, which the
# startup and liveness probes take as alive.
#
# The password never appears in argv, in the log or in postgresql.conf: initdb reads it from
# a 0600 file that is removed afterwards, and standbys authenticate through a 0600 passfile
# rewritten from the environment on every start. A RotateAuth in restart mode None rewrites
# that passfile in a running standby instead (through the server, docs/architecture.md);
# the next start reads the same credential from the Secret.
set -euo pipefail
set +x

log() { printf '%s pgops-entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

[ -n "${POSTGRES_USER:-}" ] || die "POSTGRES_USER is not set"
[ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD is not set"
[ -n "${PGDATA:-}" ] || die "PGDATA is not set"
[ -n "${POD_NAME:-}" ] || die "POD_NAME is not set"
[ -n "${POD_IP:-}" ] || die "POD_IP is not set"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
STANDBY_MODE="${STANDBY_MODE:-Hot}"
case "$STANDBY_MODE" in
Hot) hot_standby=on ;;
Warm) hot_standby=off ;;
*) die "STANDBY_MODE must be Hot or Warm, got '$STANDBY_MODE'" ;;
esac

ordinal="${POD_NAME##*-}"
case "$ordinal" in
'' | *[!0-9]*) die "cannot find the ordinal in POD_NAME '$POD_NAME'" ;;
esac

umask 0077
run_dir=/var/run/postgresql
preparing="$run_dir/pgops-preparing"
[ -d "$run_dir" ] && [ -w "$run_dir" ] || die "$run_dir is not a writable directory (the pod needs its emptyDir there)"
: >"$preparing"

base="$(dirname "$PGDATA")"
mkdir -p "$base"
passfile="$base/.pgpass"

# conf_quote VALUE: a postgresql.conf string literal ('' for ', \\ for \).
conf_quote() {
	local v="${1//\\/\\\\}"
	v="${v//\'/\'\'}"
	printf "'%s'" "$v"
}

# conninfo_quote VALUE: a libpq conninfo value (\' for ', \\ for \).
conninfo_quote() {
	local v="${1//\\/\\\\}"
	v="${v//\'/\\\'}"
	printf "'%s'" "$v"
}

# pgpass_escape VALUE: a .pgpass field (\: for :, \\ for \).
pgpass_escape() {
	local v="${1//\\/\\\\}"
	v="${v//:/\\:}"
	printf '%s' "$v"
}

# write_passfile: the credential for connecting to the primary, readable only by us.
write_passfile() {
	local tmp
	# A side file the ops-manager's rewrite left behind if it stopped half-way.
	rm -f "$passfile.pgops"
	tmp="$(mktemp "$base/.pgpass.XXXXXX")"
	printf '*:*:*:%s:%s\n' "$(pgpass_escape "$POSTGRES_USER")" "$(pgpass_escape "$POSTGRES_PASSWORD")" >"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$passfile"
}

init_primary() {
	log "initialising a new primary in $PGDATA"
	local work="$PGDATA.init" pwfile
	rm -rf "$work"
	pwfile="$(mktemp "$base/.pwfile.XXXXXX")"
	# Remove the password file however initdb ends.
	trap 'rm -f "$pwfile"' EXIT
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	initdb -D "$work" -U "$POSTGRES_USER" --pwfile="$pwfile" \
		--auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C >&2
	rm -f "$pwfile"
	trap - EXIT
	# initdb's rules admit only local addresses; write_auth_files replaces them.
	echo '# Written by pgops: replaced at start' >"$work/pg_hba.conf"
	cat >>"$work/postgresql.conf" <<'CONF'

# Written by pgops. listen_addresses, port and unix_socket_directories are set on the
# command line at every start, because the pod IP changes.
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
CONF
	mv "$work" "$PGDATA"
	log "primary initialised"
}

init_standby() {
	log "waiting for the primary at ${PRIMARY_HOST}:${PRIMARY_PORT}"
	local n=0
	until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -t 5; do
		n=$((n + 1))
		if [ $((n % 15)) -eq 0 ]; then log "still waiting for the primary at ${PRIMARY_HOST}:${PRIMARY_PORT}"; fi
		sleep 2
	done
	log "cloning the primary at ${PRIMARY_HOST}:${PRIMARY_PORT} into $PGDATA"
	local work="$PGDATA.clone"
	rm -rf "$work"
	# The clone's WAL sender keeps PostgreSQL's default timeout (the servers run with 5 s,
	# below): a clone from a primary whose disks are busy must not be cut off.
	PGOPTIONS="-c wal_sender_timeout=60s" PGPASSFILE="$passfile" pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$POSTGRES_USER" \
		-D "$work" -X stream --checkpoint=fast --no-password >&2
	chmod 0700 "$work"
	mv "$work" "$PGDATA"
	log "standby cloned"
}

# configure_standby: on every start, point the standby at the primary with the current
# credential and mark it as a standby.
#
# tcp_user_timeout: the WAL receiver's connect has no timeout of its own (connect_timeout
# is not applied to it). A standby that reconnects while the primary's pod is replaced
# sends its SYN through the Service's ClusterIP to an address that is gone (kube-proxy's
# rules, or the connection tracking entry of the first SYN, still name the old pod), and
# the kernel retransmits it for about two minutes. With a 5 s TCP user timeout the attempt
# fails at 5 s and the next one, from a new port, reaches the new pod. It also ends an
# established connection whose primary vanished without a word.
configure_standby() {
	local auto="$PGDATA/postgresql.auto.conf" tmp conninfo
	conninfo="host=$(conninfo_quote "$PRIMARY_HOST") port=$(conninfo_quote "$PRIMARY_PORT")"
	conninfo+=" user=$(conninfo_quote "$POSTGRES_USER") passfile=$(conninfo_quote "$passfile")"
	conninfo+=" application_name=$(conninfo_quote "$POD_NAME") tcp_user_timeout=5000"
	tmp="$(mktemp "$PGDATA/.auto.conf.XXXXXX")"
	if [ -f "$auto" ]; then
		grep -v -E '^[[:space:]]*(primary_conninfo|hot_standby)[[:space:]]*=' "$auto" >"$tmp" || true
	fi
	printf 'primary_conninfo = %s\n' "$(conf_quote "$conninfo")" >>"$tmp"
	printf 'hot_standby = %s\n' "$hot_standby" >>"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$auto"
	: >"$PGDATA/standby.signal"
}

# ident_quote VALUE: a pg_hba.conf / pg_ident.conf token ("" for ").
ident_quote() {
	printf '"%s"' "${1//\"/\"\"}"
}

# write_auth_files: on every start, so a data directory made by an earlier pgops (or cloned
# from the primary) gets the current rules. Password (scram-sha-256) over TCP for clients
# and replication; peer over the Unix socket for the OS user postgres, as postgres or as
# the superuser, so an exec into the pod needs no password. A pg_hba.conf that pgops did
# not write (its first line says so) is left as it is: its rules are somebody's.
write_auth_files() {
	local tmp first=""
	if [ -f "$PGDATA/pg_hba.conf" ]; then
		IFS= read -r first <"$PGDATA/pg_hba.conf" || true
		case "$first" in
		'# Written by pgops'*) ;;
		*)
			log "$PGDATA/pg_hba.conf was not written by pgops: leaving it and pg_ident.conf as they are"
			return 0
			;;
		esac
	fi
	tmp="$(mktemp "$PGDATA/.hba.XXXXXX")"
	cat >"$tmp" <<'HBA'
# Written by pgops at every start; edits are lost.
# TYPE  DATABASE     USER  ADDRESS    METHOD
local   all          all              peer map=pgops
host    all          all   0.0.0.0/0  scram-sha-256
host    all          all   ::/0       scram-sha-256
host    replication  all   0.0.0.0/0  scram-sha-256
host    replication  all   ::/0       scram-sha-256
HBA
	chmod 0600 "$tmp"
	mv -f "$tmp" "$PGDATA/pg_hba.conf"
	tmp="$(mktemp "$PGDATA/.ident.XXXXXX")"
	{
		echo '# Written by pgops at every start; edits are lost.'
		echo '# MAPNAME  SYSTEM-USERNAME  PG-USERNAME'
		echo 'pgops      postgres         postgres'
		printf 'pgops      postgres         %s\n' "$(ident_quote "$POSTGRES_USER")"
	} >"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$PGDATA/pg_ident.conf"
}

# A data directory without PG_VERSION is empty (the kubelet or a user made it) or foreign:
# refuse the latter rather than destroy it. Initialisation works in a side directory that is
# renamed into place at the end, so a crash half way never leaves a half-made PGDATA.
if [ -d "$PGDATA" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	rmdir "$PGDATA" 2>/dev/null || die "$PGDATA is not empty but holds no PostgreSQL data directory; move it away"
fi
if [ "$ordinal" = 0 ]; then
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_primary
	fi
	rm -f "$PGDATA/standby.signal"
else
	[ -n "${PRIMARY_HOST:-}" ] || die "PRIMARY_HOST is not set"
	write_passfile
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_standby
	fi
	configure_standby
fi
chmod 0700 "$PGDATA"
write_auth_files

# postgres does not need the password: keep it out of the server processes' environment.
unset POSTGRES_PASSWORD
rm -f "$preparing"
log "starting postgres as $([ "$ordinal" = 0 ] && echo primary || echo standby) on ${POD_IP}:${PGPORT:-5432}"
# wal_retrieve_retry_interval: a standby whose primary restarted (a rotation, a node drain)
# tries to stream again after 1 s, not after PostgreSQL's default 5 s.
# wal_sender_timeout, wal_receiver_timeout: 5 s, not 60 s, as CloudNativePG sets them. A
# primary's fast shutdown waits for every WAL sender to see its standby confirm the last
# WAL, and a sender whose standby vanished without a word (its pod gone, its node lost)
# waits out this timeout: with 60 s the kubelet kills the primary at its 30 s grace, and a
# rotation's restart of the primary stalls for that long. A standby likewise notices a
# vanished primary within 5 s.
exec postgres -D "$PGDATA" \
	-c listen_addresses='*' \
	-c unix_socket_directories="$run_dir" \
	-c hot_standby="$hot_standby" \
	-c wal_retrieve_retry_interval=1s \
	-c wal_sender_timeout=5s \
	-c wal_receiver_timeout=5s
