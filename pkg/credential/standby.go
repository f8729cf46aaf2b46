package credential

import (
	"context"
	"strings"
)

// PassfileLine is a .pgpass line matching every host, port and database for user
// (':' and '\' escaped with '\').
func PassfileLine(user, password string) string {
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:" + escape.Replace(user) + ":" + escape.Replace(password)
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
