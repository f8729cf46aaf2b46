package agent

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/pkg/credential"
)

const (
	repointUser     = "postgres"
	repointPassword = `New-pa:ss\word-2`
)

// repointServer is a standby's agent whose server holds repointPassword's verifier.
func repointServer(t *testing.T, pod string, facts standbyFacts, factsErr error) (*Config, *httptest.Server) {
	t.Helper()
	c, _, srv := repointServerWith(t, pod, facts, factsErr, &fakeReceiver{pid: 100, streaming: true})
	return c, srv
}

// fakeReceiver is the standby's WAL receiver: signalled, it is replaced by a new one that
// started after any stamp, streaming unless stuck.
type fakeReceiver struct {
	mu        sync.Mutex
	pid       int
	fresh     bool
	streaming bool
	stuck     bool
	signalled []int
}

func (f *fakeReceiver) state(context.Context, string) (receiverState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return receiverState{pid: f.pid, streaming: f.streaming, startedSince: f.fresh}, nil
}

func (f *fakeReceiver) signal(pid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signalled = append(f.signalled, pid)
	f.pid, f.fresh, f.streaming = pid+1, true, !f.stuck
	return nil
}

func repointServerWith(t *testing.T, pod string, facts standbyFacts, factsErr error, rcv *fakeReceiver) (*Config, *repointer, *httptest.Server) {
	t.Helper()
	c := testConfig(t, pod)
	require.NoError(t, os.MkdirAll(c.RunDir, 0o700))
	require.NoError(t, os.MkdirAll(c.DataDir, 0o700))
	p := &repointer{cfg: c, wait: time.Second,
		facts:    func(context.Context, string) (standbyFacts, error) { return facts, factsErr },
		receiver: rcv.state, signal: rcv.signal}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return c, p, srv
}

func storedVerifier(t *testing.T, password string) sql.NullString {
	t.Helper()
	v, err := credential.NewVerifier(password)
	require.NoError(t, err)
	return sql.NullString{String: v, Valid: true}
}

func TestRepointWritesTheCredentialAndReconnectsOnce(t *testing.T) {
	facts := standbyFacts{inRecovery: true, verifier: storedVerifier(t, repointPassword), now: "2026-12-08 01:02:03.456789+00"}
	rcv := &fakeReceiver{pid: 100, streaming: true}
	c, _, srv := repointServerWith(t, "db-1", facts, nil, rcv)
	written, err := RepointStandby(context.Background(), srv.Client(), srv.URL, repointUser, repointPassword)
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, PassfileStamp+facts.now+"\n"+credential.PassfileLine(repointUser, repointPassword)+"\n", read(t, c.Passfile()))
	fi, err := os.Stat(c.Passfile())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, []int{100}, rcv.signalled, "the receiver that used the old credential is ended once")

	// Asked again (the ops-manager restarted): nothing is written, nothing ended.
	written, err = RepointStandby(context.Background(), srv.Client(), srv.URL, repointUser, repointPassword)
	require.NoError(t, err)
	assert.False(t, written, "a passfile holding the credential is left alone")
	assert.Equal(t, []int{100}, rcv.signalled)
}

// A passfile written at the pod's start (no stamp) was read by every connection: nothing
// to reconnect.
func TestRepointOfAStandbyStartedWithTheCredentialReconnectsNothing(t *testing.T) {
	facts := standbyFacts{inRecovery: true, verifier: storedVerifier(t, repointPassword), now: "now"}
	rcv := &fakeReceiver{pid: 100, streaming: true}
	c, _, srv := repointServerWith(t, "db-1", facts, nil, rcv)
	require.NoError(t, os.WriteFile(c.Passfile(), []byte(credential.PassfileLine(repointUser, repointPassword)+"\n"), 0o600))
	written, err := RepointStandby(context.Background(), srv.Client(), srv.URL, repointUser, repointPassword)
	require.NoError(t, err)
	assert.False(t, written)
	assert.Empty(t, rcv.signalled)
}

// A receiver that does not stream on the new connection in time: refused, to be asked
// again; the passfile holds the credential already.
func TestRepointAnswersRetryWhileTheStandbyDoesNotStream(t *testing.T) {
	facts := standbyFacts{inRecovery: true, verifier: storedVerifier(t, repointPassword), now: "now"}
	rcv := &fakeReceiver{pid: 100, streaming: true, stuck: true}
	_, _, srv := repointServerWith(t, "db-1", facts, nil, rcv)
	_, err := RepointStandby(context.Background(), srv.Client(), srv.URL, repointUser, repointPassword)
	var refused *AgentError
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, http.StatusServiceUnavailable, refused.Status)
	assert.True(t, refused.Retryable())
	assert.Equal(t, []int{100}, rcv.signalled, "ended once, not again while its successor starts")
}

func TestRepointRefusals(t *testing.T) {
	good := standbyFacts{inRecovery: true, verifier: storedVerifier(t, repointPassword), now: "now"}
	for _, tc := range []struct {
		name     string
		pod      string
		facts    standbyFacts
		factsErr error
		password string
		status   int
	}{
		{name: "a wrong password", pod: "db-1", facts: good, password: "Another-password-3", status: http.StatusForbidden},
		{name: "a change the standby has not replayed", pod: "db-1", facts: standbyFacts{inRecovery: true, verifier: storedVerifier(t, "Old-password-1"), now: "now"}, password: repointPassword, status: http.StatusForbidden},
		{name: "no such role", pod: "db-1", facts: standbyFacts{inRecovery: true, now: "now"}, password: repointPassword, status: http.StatusForbidden},
		{name: "a verifier that is not SCRAM", pod: "db-1", facts: standbyFacts{inRecovery: true, verifier: sql.NullString{String: "md5abc", Valid: true}}, password: repointPassword, status: http.StatusForbidden},
		{name: "a promoted server", pod: "db-1", facts: standbyFacts{verifier: good.verifier}, password: repointPassword, status: http.StatusConflict},
		{name: "the primary's pod", pod: "db-0", facts: good, password: repointPassword, status: http.StatusConflict},
		{name: "a control character", pod: "db-1", facts: good, password: "New-pass\x01word", status: http.StatusBadRequest},
		{name: "the server does not answer", pod: "db-1", factsErr: errors.New("dial: " + repointPassword), password: repointPassword, status: http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := repointServer(t, tc.pod, tc.facts, tc.factsErr)
			require.NoError(t, os.WriteFile(c.Passfile(), []byte("before\n"), 0o600))
			_, err := RepointStandby(context.Background(), srv.Client(), srv.URL, repointUser, tc.password)
			var refused *AgentError
			require.ErrorAs(t, err, &refused)
			assert.Equal(t, tc.status, refused.Status, refused.Message)
			assert.Equal(t, tc.status == http.StatusForbidden || tc.status == http.StatusServiceUnavailable, refused.Retryable())
			assert.NotContains(t, err.Error(), tc.password, "no password in the answer")
			assert.Equal(t, "before\n", read(t, c.Passfile()), "the passfile is untouched")
		})
	}
}

func TestRepointRefusesWhatIsNotACredential(t *testing.T) {
	_, srv := repointServer(t, "db-1", standbyFacts{}, nil)
	for name, body := range map[string]string{
		"not JSON":       "username=postgres",
		"unknown fields": `{"username":"postgres","password":"Pass-word-123","command":"rm"}`,
		"200 kB":         `{"username":"postgres","password":"` + strings.Repeat("a", 200<<10) + `"}`,
	} {
		resp, err := srv.Client().Do(mustRequest(t, http.MethodPut, srv.URL+StandbyPassfilePath, body))
		require.NoError(t, err, name)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, name)
	}
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	return req
}
