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
