package credential

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrNotStandby is returned by [CheckStandby] for a server that is not in recovery.
var ErrNotStandby = errors.New("the server is not a standby")

// StandbyState is what a standby says about its connection to the primary.
type StandbyState struct {
	// ApplicationName is the standby's application_name in primary_conninfo: its name in
	// the primary's pg_stat_replication.
	ApplicationName string
	// PassfileCurrent tells whether the passfile primary_conninfo names holds exactly the
	// credential asked about.
	PassfileCurrent bool
	// ReconnectedSince tells whether the WAL receiver connected after the pgops agent last
	// re-pointed the running standby (the time in the file's PassfileStamp line), so its
	// connection authenticated with it; a passfile written at the pod's start, without the
	// stamp, counts as read by every connection.
	ReconnectedSince bool
	// Streaming tells whether the WAL receiver streams (pg_stat_wal_receiver).
	Streaming bool
}

// CheckStandby tells what the hot standby behind target says about its connection to the
// primary, for the credential user and password. target.User must be a superuser.
func CheckStandby(ctx context.Context, target Target, user, password string) (StandbyState, error) {
	const op = "check standby"
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return StandbyState{}, err
	}
	defer closeQuietly(db, conn)
	fail := func(err error) error { return standbyErr(ctx, op, err, password, target.Password) }

	params, passfile, err := standbyConnInfo(ctx, conn)
	if err != nil {
		return StandbyState{}, fail(err)
	}
	var state StandbyState
	state.ApplicationName, _ = connInfoValue(params, "application_name")
	held, writtenAt, err := passfileHolds(ctx, conn, passfile, PassfileLine(user, password))
	if err != nil {
		return StandbyState{}, fail(err)
	}
	state.PassfileCurrent = held
	var status sql.NullString
	var since sql.NullBool
	err = conn.QueryRowContext(ctx, `
		SELECT (SELECT status FROM pg_catalog.pg_stat_wal_receiver),
		       (SELECT backend_start > $1::timestamptz FROM pg_catalog.pg_stat_activity
		         WHERE backend_type = 'walreceiver' ORDER BY backend_start DESC LIMIT 1)`,
		nullIfEmpty(writtenAt)).Scan(&status, &since)
	if err != nil {
		return StandbyState{}, fail(err)
	}
	state.Streaming = status.String == "streaming"
	// A passfile without the stamp was written at the pod's start, before the server
	// started (a standby restarted since the credential was published): every connection
	// of this server used it.
	state.ReconnectedSince = held && (writtenAt == "" || (since.Valid && since.Bool))
	return state, nil
}

// ReconnectStandby ends, on the primary behind target, the WAL sender of the standby whose
// application_name is name: the standby's WAL receiver reconnects at once, authenticating
// with its passfile. Replication pauses for the moment of the reconnect; no client session
// is touched. target.User must be a superuser.
func ReconnectStandby(ctx context.Context, target Target, name string) error {
	const op = "reconnect standby"
	if name == "" {
		return fmt.Errorf("credential: %s: %w: empty standby name", op, ErrInvalidTarget)
	}
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return err
	}
	defer closeQuietly(db, conn)
	_, err = conn.ExecContext(ctx,
		`SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_replication WHERE application_name = $1`, name)
	return wrapErr(ctx, op, err, false, target.Password)
}

// PassfileStamp starts the comment line that the pgops agent puts first in a running
// standby's passfile when it re-points it (libpq skips lines starting with #), followed by
// the time of writing by the server's clock, as PostgreSQL prints a timestamptz.
const PassfileStamp = "# written by pgops at "

// standbyConnInfo reads the standby's primary_conninfo and the absolute passfile it names.
// A standby given its password inline, or no passfile, is not one pgops set up.
func standbyConnInfo(ctx context.Context, conn *sql.Conn) ([]connInfoParam, string, error) {
	params, err := primaryConnInfo(ctx, conn)
	if err != nil {
		return nil, "", err
	}
	if _, inline := connInfoValue(params, "password"); inline {
		return nil, "", fmt.Errorf("primary_conninfo carries a password itself, so a passfile would not be used")
	}
	passfile, ok := connInfoValue(params, "passfile")
	if !ok || !strings.HasPrefix(passfile, "/") {
		return nil, "", fmt.Errorf("primary_conninfo names no absolute passfile")
	}
	return params, passfile, nil
}

// passfileHolds tells whether the passfile at path holds line as its credential, and when
// the agent wrote it while the server ran ("" if it did not).
func passfileHolds(ctx context.Context, conn *sql.Conn, path, line string) (held bool, writtenAt string, err error) {
	var content sql.NullString
	if err := conn.QueryRowContext(ctx, `SELECT pg_catalog.pg_read_file($1, 0, 65536, true)`, path).Scan(&content); err != nil {
		return false, "", err
	}
	for _, l := range strings.Split(content.String, "\n") {
		switch {
		case strings.HasPrefix(l, PassfileStamp):
			writtenAt = strings.TrimPrefix(l, PassfileStamp)
		case l == "" || strings.HasPrefix(l, "#"):
		default:
			// libpq uses the first matching line; every pgops line matches everything.
			return l == line, writtenAt, nil
		}
	}
	return false, writtenAt, nil
}

// PassfileLine is a .pgpass line matching every host, port and database for user
// (':' and '\' escaped with '\').
func PassfileLine(user, password string) string {
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:" + escape.Replace(user) + ":" + escape.Replace(password)
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// primaryConnInfo reads and parses the standby's primary_conninfo.
func primaryConnInfo(ctx context.Context, conn *sql.Conn) ([]connInfoParam, error) {
	var inRecovery bool
	var conninfo string
	if err := conn.QueryRowContext(ctx,
		`SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('primary_conninfo')`,
	).Scan(&inRecovery, &conninfo); err != nil {
		return nil, err
	}
	if !inRecovery {
		return nil, ErrNotStandby
	}
	params, err := parseConnInfo(conninfo)
	if err != nil {
		return nil, fmt.Errorf("primary_conninfo cannot be read: %w", err)
	}
	if _, ok := connInfoValue(params, "host"); !ok {
		if _, ok := connInfoValue(params, "hostaddr"); !ok {
			return nil, fmt.Errorf("primary_conninfo names no host: the standby does not stream from a primary")
		}
	}
	return params, nil
}

// standbyErr is wrapErr with the secrets redacted, keeping ErrNotStandby for errors.Is.
func standbyErr(ctx context.Context, op string, err error, secrets ...string) error {
	if errors.Is(err, ErrNotStandby) {
		return fmt.Errorf("credential: %s: %w", op, ErrNotStandby)
	}
	return wrapErr(ctx, op, err, true, secrets...)
}

// WakeStandby logs in to the standby behind target and, when it runs no WAL receiver (its
// primary went away, and it waits wal_retrieve_retry_interval before it tries again),
// reloads its configuration: the reload wakes its startup process, which tries the
// primary at once. A standby with a WAL receiver is left alone. It tells whether it
// reloaded. target.User needs the right to execute pg_reload_conf (a superuser, or a grant
// of it), which PostgreSQL checks before the query runs, also when nothing is reloaded.
func WakeStandby(ctx context.Context, target Target) (bool, error) {
	const op = "wake standby"
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return false, err
	}
	defer closeQuietly(db, conn)
	var woke bool
	err = conn.QueryRowContext(ctx, `
		SELECT CASE WHEN pg_catalog.pg_is_in_recovery()
		             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_wal_receiver)
		            THEN pg_catalog.pg_reload_conf() ELSE false END`).Scan(&woke)
	if err != nil {
		return false, wrapErr(ctx, op, err, false, target.Password)
	}
	return woke, nil
}
