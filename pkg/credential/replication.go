package credential

import "context"

// StreamingStandbys returns how many standbys stream WAL from the primary behind target
// (pg_stat_replication rows in state 'streaming'). The operator checks it after restarting
// a database's pods: standbys reconnect with the credential from their new environment, so
// a rotation is only done once they stream again. target.User must be a superuser or hold
// pg_monitor to see the rows.
func StreamingStandbys(ctx context.Context, target Target) (int, error) {
	names, err := StreamingStandbyNames(ctx, target)
	return len(names), err
}

// StreamingStandbyNames logs in to the primary behind target and returns the
// application_name of every standby streaming from it (pgops standbys connect with their pod
// name). A rejected login is an error that [Classify] reports as ClassAuth.
func StreamingStandbyNames(ctx context.Context, target Target) ([]string, error) {
	const op = "list streaming standbys"
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return nil, err
	}
	defer closeQuietly(db, conn)
	rows, err := conn.QueryContext(ctx,
		`SELECT application_name FROM pg_catalog.pg_stat_replication WHERE state = 'streaming' ORDER BY 1`)
	if err != nil {
		return nil, wrapErr(ctx, op, err, false, target.Password)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, wrapErr(ctx, op, err, false, target.Password)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(ctx, op, err, false, target.Password)
	}
	return names, nil
}

// StandbyLag is one standby as the primary sees it in pg_stat_replication.
type StandbyLag struct {
	// Name is the standby's application_name: pgops standbys connect with their pod name.
	Name string
	// State is the walsender's state: streaming, catchup, startup or backup.
	State string
	// SyncState is async, potential, sync or quorum.
	SyncState string
	// ReplayLagBytes is how far the standby's replay is behind the primary's WAL; -1 when
	// the standby has not reported a replay position yet.
	ReplayLagBytes int64
	// ReplayLagSeconds is PostgreSQL's replay_lag, which is 0 when the standby is idle and
	// caught up; -1 when unknown.
	ReplayLagSeconds float64
}

// ReplicationLag logs in to the primary behind target and returns each standby connected to
// it, by name; a name the primary lists twice (the walsender of a restarted standby that
// has not timed out yet) comes oldest first. target.User must be a superuser or hold
// pg_monitor to see the positions.
func ReplicationLag(ctx context.Context, target Target) ([]StandbyLag, error) {
	const op = "read replication lag"
	db, conn, err := target.open(ctx, op)
	if err != nil {
		return nil, err
	}
	defer closeQuietly(db, conn)
	rows, err := conn.QueryContext(ctx, `SELECT application_name, state, sync_state,
		COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn)::bigint, -1),
		COALESCE(EXTRACT(EPOCH FROM replay_lag)::float8, CASE WHEN replay_lsn IS NULL THEN -1 ELSE 0 END)
		FROM pg_catalog.pg_stat_replication ORDER BY 1, backend_start`)
	if err != nil {
		return nil, wrapErr(ctx, op, err, false, target.Password)
	}
	defer rows.Close()
	var standbys []StandbyLag
	for rows.Next() {
		var s StandbyLag
		if err := rows.Scan(&s.Name, &s.State, &s.SyncState, &s.ReplayLagBytes, &s.ReplayLagSeconds); err != nil {
			return nil, wrapErr(ctx, op, err, false, target.Password)
		}
		standbys = append(standbys, s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(ctx, op, err, false, target.Password)
	}
	return standbys, nil
}
