package credential_test

import (
	"context"
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
	}, 10*time.Second, 50*time.Millisecond)
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
	}, 10*time.Second, 50*time.Millisecond)
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
	_, _, err := credential.EnsureReplication(ctx, tg, &credential.SynchronousSettings{StandbyNames: `ANY 1 ("absent")`, Commit: "on"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.QueryString(t, "SHOW synchronous_standby_names") != "" }, 10*time.Second, 50*time.Millisecond)

	// An ordinary commit waits: still waiting after a second. (Cancelling the wait lets
	// it return with only a warning, as the commit is already local.) It runs in a session
	// that has itself seen the new setting: a pooled session may not have processed the
	// reload yet when a new one already starts with it.
	conn, err := s.DB(t).Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool {
		var names string
		return conn.QueryRowContext(ctx, "SHOW synchronous_standby_names").Scan(&names) == nil && names != ""
	}, 10*time.Second, 20*time.Millisecond)
	waiting, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = conn.ExecContext(waiting, "CREATE TABLE waits (v int)")
	}()
	select {
	case <-done:
		t.Fatal("an ordinary commit did not wait for the synchronous standby")
	case <-time.After(time.Second):
	}
	cancel()
	<-done

	pw, err := credential.GeneratePassword(credential.DefaultPasswordLength)
	require.NoError(t, err)
	bounded, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	require.NoError(t, credential.SetPassword(bounded, tg, "app", pw))
	require.NoError(t, bounded.Err(), "SetPassword returned on its own, not by a cancelled wait")
	ok, err := credential.PasswordMatches(ctx, tg, "app", pw)
	require.NoError(t, err)
	assert.True(t, ok)
}
