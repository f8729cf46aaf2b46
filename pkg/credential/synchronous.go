package credential

import (
	"context"
	"database/sql"

	"github.com/lib/pq"
)

// SynchronousSettings are a primary's synchronous_standby_names and synchronous_commit.
// The zero value is asynchronous replication: both at PostgreSQL's defaults.
type SynchronousSettings struct {
	StandbyNames string
	Commit       string
}

// Standby is a standby streaming from the primary: its application_name (pgops standbys
// use their pod name) and pg_stat_replication's sync_state (async, potential, sync or
// quorum).
type Standby struct {
	Name      string
	SyncState string
}

// Synchronous reports whether the primary counts the standby towards a commit.
func (s Standby) Synchronous() bool { return s.SyncState == "sync" || s.SyncState == "quorum" }

// EnsureReplication logs in to the primary behind target, brings synchronous_standby_names
// and synchronous_commit to want unless it is nil (ALTER SYSTEM, then a configuration
// reload: no restart; changed reports it), and returns the standbys that stream. ALTER SYSTEM keeps the
// settings in the primary's postgresql.auto.conf, so they survive its restarts. A rejected
// login is an error that [Classify] reports as ClassAuth.
func EnsureReplication(ctx context.Context, target Target, want *SynchronousSettings) (standbys []Standby, changed bool, err error) {
	const op = "ensure replication settings"
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return nil, false, err
	}
	defer closeQuietly(db, conn)
	fail := func(err error) ([]Standby, bool, error) {
		return nil, changed, wrapErr(ctx, op, err, false, target.Password)
	}

	if want != nil {
		if changed, err = ensureSynchronousSettings(ctx, conn, *want); err != nil {
			return fail(err)
		}
	}

	rows, err := conn.QueryContext(ctx,
		`SELECT application_name, sync_state FROM pg_catalog.pg_stat_replication WHERE state = 'streaming' ORDER BY 1`)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s Standby
		if err := rows.Scan(&s.Name, &s.SyncState); err != nil {
			return fail(err)
		}
		standbys = append(standbys, s)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return standbys, changed, nil
}

// ensureSynchronousSettings sets want on the server of conn where it differs, and reloads.
func ensureSynchronousSettings(ctx context.Context, conn *sql.Conn, want SynchronousSettings) (bool, error) {
	var names, commit string
	if err := conn.QueryRowContext(ctx,
		`SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit')`).Scan(&names, &commit); err != nil {
		return false, err
	}
	wantCommit := want.Commit
	if wantCommit == "" {
		wantCommit = "on" // PostgreSQL's default, which RESET restores
	}
	if names == want.StandbyNames && commit == wantCommit {
		return false, nil
	}
	for _, s := range []struct{ setting, value string }{
		{"synchronous_standby_names", want.StandbyNames},
		{"synchronous_commit", want.Commit},
	} {
		stmt := "ALTER SYSTEM RESET " + s.setting
		if s.value != "" {
			stmt = "ALTER SYSTEM SET " + s.setting + " = " + pq.QuoteLiteral(s.value)
		}
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return false, err
		}
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_reload_conf()`); err != nil {
		return false, err
	}
	return true, nil
}
