package credential_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/pgtest"
)

func TestEnsureReplicationAppliesAndResetsSynchronousSettings(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	want := credential.SynchronousSettings{StandbyNames: `ANY 1 ("db-1","db-2")`, Commit: "remote_write"}

	standbys, changed, err := credential.EnsureReplication(ctx, tg, &want)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Empty(t, standbys, "a lone server has no standbys")
	// A new session sees the reloaded configuration.
	require.Eventually(t, func() bool {
		return s.QueryString(t, "SHOW synchronous_standby_names") == want.StandbyNames &&
			s.QueryString(t, "SHOW synchronous_commit") == "remote_write"
	}, time.Minute, 50*time.Millisecond)
	_, changed, err = credential.EnsureReplication(ctx, tg, &want)
	require.NoError(t, err)
	assert.False(t, changed, "nothing to do the second time")
	// A role's own setting is the role's: it neither makes every check write nor is
	// overwritten.
	// (Its own commit must not wait for the standbys the settings name, none of which exist.)
	s.Exec(t, "BEGIN; SET LOCAL synchronous_commit = local; ALTER ROLE "+s.SuperUser+" SET synchronous_commit = off; COMMIT")
	_, changed, err = credential.EnsureReplication(ctx, tg, &want)
	require.NoError(t, err)
	assert.False(t, changed, "the session's value differs, the file does not")
	s.Exec(t, "BEGIN; SET LOCAL synchronous_commit = local; ALTER ROLE "+s.SuperUser+" RESET synchronous_commit; COMMIT")

	// nil leaves the settings alone; the zero value resets them to PostgreSQL's defaults.
	_, changed, err = credential.EnsureReplication(ctx, tg, nil)
	require.NoError(t, err)
	assert.False(t, changed)
	_, changed, err = credential.EnsureReplication(ctx, tg, &credential.SynchronousSettings{})
	require.NoError(t, err)
	assert.True(t, changed)
	require.Eventually(t, func() bool {
		return s.QueryString(t, "SHOW synchronous_standby_names") == "" && s.QueryString(t, "SHOW synchronous_commit") == "on"
	}, time.Minute, 50*time.Millisecond)
}

// TestSetPasswordNeverWaitsForASynchronousStandby: with synchronous standbys named that do
// not stream (one being restarted, or down), every ordinary commit on the primary waits;
// the credential change must not, or a rotation would hang on the standby it restarts.
func TestSetPasswordNeverWaitsForASynchronousStandby(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	ctx := ctxT(t)
	tg := superTarget(s)
	createRole(t, s, "app")
	s.Exec(t, "CREATE TABLE waits (v int)")
	_, _, err := credential.EnsureReplication(ctx, tg, &credential.SynchronousSettings{StandbyNames: `ANY 1 ("absent")`, Commit: "on"})
	require.NoError(t, err)

	// An ordinary commit waits. Seeing the new setting is not enough for that: a session
	// can show it before the checkpointer has published it to the commit path, so each try
	// starts a commit and waits for it to show the SyncRep wait in pg_stat_activity
	// (cancelling the wait lets the commit return with a warning, as it is already local).
	db := s.DB(t)
	require.Eventually(t, func() bool { return commitWaitsForSyncRep(ctx, db) }, time.Minute, 50*time.Millisecond,
		"an ordinary commit waits for the synchronous standby")

	pw, err := credential.GeneratePassword(credential.DefaultPasswordLength)
	require.NoError(t, err)
	bounded, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, credential.SetPassword(bounded, tg, "app", pw))
	require.NoError(t, bounded.Err(), "SetPassword returned on its own, not by a cancelled wait")
	ok, err := credential.PasswordMatches(ctx, tg, "app", pw)
	require.NoError(t, err)
	assert.True(t, ok)
}

// commitWaitsForSyncRep commits a row into the table waits on a connection of db and reports
// whether the commit waited for synchronous replication (seen in pg_stat_activity within a few seconds)
// rather than returning at once; the wait is cancelled before it returns.
func commitWaitsForSyncRep(ctx context.Context, db *sql.DB) bool {
	conn, err := db.Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	var pid int
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return false
	}
	waiting, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = conn.ExecContext(waiting, "INSERT INTO waits VALUES (1)")
	}()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			return false // committed without waiting
		default:
		}
		var syncRep bool
		err := db.QueryRowContext(ctx,
			"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep')", pid).Scan(&syncRep)
		if err == nil && syncRep {
			return true
		}
	}
	return false
}
