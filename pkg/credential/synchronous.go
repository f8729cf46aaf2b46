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

// ensureSynchronousSettings makes postgresql.auto.conf (what ALTER SYSTEM writes) hold
// want, an empty value meaning no entry, and reloads when it changed anything. It compares
// the file, not the session's values: a role's or a database's own synchronous_commit, or
// postgresql.conf, must neither make it write on every check nor be overwritten.
func ensureSynchronousSettings(ctx context.Context, conn *sql.Conn, want SynchronousSettings) (bool, error) {
	rows, err := conn.QueryContext(ctx, `SELECT name, setting FROM pg_catalog.pg_file_settings
		WHERE name IN ('synchronous_standby_names', 'synchronous_commit') AND sourcefile LIKE '%/postgresql.auto.conf'
		ORDER BY seqno`)
	if err != nil {
		return false, err
	}
	have := map[string]string{}
	for rows.Next() {
		var name, setting string
		if err := rows.Scan(&name, &setting); err != nil {
			rows.Close()
			return false, err
		}
		have[name] = setting // the last entry wins, as when PostgreSQL reads the file
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if have["synchronous_standby_names"] == want.StandbyNames && have["synchronous_commit"] == want.Commit {
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
