package agent

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

func probe(t *testing.T, h *health, path string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

var (
	errStarting = &pq.Error{Code: "57P03", Message: "the database system is starting up"}
	errAuth     = &pq.Error{Code: "28000", Message: "no pg_hba.conf entry"}
	errHung     = &net.OpError{Op: "read", Net: "unix", Err: os.ErrDeadlineExceeded}
)

func TestProbesAnswerFromTheServersState(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		mode                    StandbyMode
		phase                   serverPhase
		queryErr, loginErr      error
		standbySignal           bool
		startup, ready, healthy int
	}{
		{name: "preparing the data directory", phase: preparing, startup: 503, ready: 503, healthy: 200},
		{name: "accepting connections", phase: running, startup: 200, ready: 200, healthy: 200},
		{name: "starting up or recovering", phase: running, queryErr: errStarting, startup: 200, ready: 503, healthy: 200},
		{name: "hung: no answer within the deadline", phase: running, queryErr: errHung, startup: 503, ready: 503, healthy: 503},
		{name: "postmaster stopped: the kept backend answers, a new login does not", phase: running, loginErr: errHung, startup: 200, ready: 200, healthy: 503},
		{name: "socket gone", phase: running, queryErr: errors.New("dial unix: no such file"), startup: 503, ready: 503, healthy: 503},
		{name: "a user's pg_hba.conf refuses the agent", phase: running, queryErr: errAuth, startup: 200, ready: 200, healthy: 200},
		{name: "warm standby answers", mode: Warm, phase: running, queryErr: errStarting, standbySignal: true, startup: 200, ready: 200, healthy: 200},
		{name: "warm primary still starting", mode: Warm, phase: running, queryErr: errStarting, startup: 200, ready: 503, healthy: 200},
		{name: "shutting down as asked", phase: stopping, startup: 200, ready: 503, healthy: 200},
		{name: "postgres exited", phase: stopped, startup: 503, ready: 503, healthy: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &health{cfg: &Config{StandbyMode: tc.mode}, started: time.Now()}
			h.setPhase(tc.phase)
			queries := 0
			h.query = func() error { queries++; return tc.queryErr }
			h.login = func() error { queries++; return tc.loginErr }
			h.standbySignal = func() bool { return tc.standbySignal }
			require.Equal(t, tc.healthy, probe(t, h, LivenessPath), "liveness")
			require.Equal(t, tc.ready, probe(t, h, ReadinessPath), "readiness")
			require.Equal(t, tc.startup, probe(t, h, StartupPath), "startup")
			if tc.phase != running {
				require.Zero(t, queries, "no query before postgres runs")
			}
		})
	}
}

func TestProbesArrivingTogetherShareOneQuery(t *testing.T) {
	h := &health{cfg: &Config{}}
	h.setPhase(running)
	queries, logins := 0, 0
	h.query = func() error { queries++; return nil }
	h.login = func() error { logins++; return nil }
	for range 3 {
		probe(t, h, ReadinessPath)
	}
	require.Equal(t, 1, queries)
	require.Zero(t, logins, "readiness forks no backend")
	probe(t, h, LivenessPath)
	probe(t, h, LivenessPath)
	require.Equal(t, 1, queries)
	require.Equal(t, 1, logins, "liveness makes one new connection")
}

func TestUnknownPathsAndMethodsChangeNothing(t *testing.T) {
	h := &health{cfg: &Config{}}
	rec := httptest.NewRecorder()
	h.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, ReadinessPath, nil))
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	require.Equal(t, http.StatusNotFound, probe(t, h, "/repoint"))
}

// A preparation longer than the grace (a clone of a large database) passes the startup
// probe, so the kubelet does not kill it at the end of the pod's startup budget.
func TestStartupPassesALongPreparation(t *testing.T) {
	h := &health{cfg: &Config{}, started: time.Now().Add(-startupPreparingGrace - time.Second)}
	require.Equal(t, http.StatusOK, probe(t, h, StartupPath))
	require.Equal(t, http.StatusServiceUnavailable, probe(t, h, ReadinessPath))
}

// Liveness makes a new connection once every loginEvery while logins succeed, and looks at
// the postmaster's process at every probe.
func TestLivenessLogsInSeldomAndSeesAStoppedPostmaster(t *testing.T) {
	h := &health{cfg: &Config{}, started: time.Now()}
	h.setPhase(running)
	logins, stopped := 0, false
	h.query = func() error { return nil }
	h.login = func() error { logins++; return nil }
	h.postmasterStopped = func() bool { return stopped }
	require.Equal(t, http.StatusOK, probe(t, h, LivenessPath))
	time.Sleep(checkReuse)
	require.Equal(t, http.StatusOK, probe(t, h, LivenessPath))
	require.Equal(t, 1, logins, "one new connection per loginEvery")
	stopped = true
	time.Sleep(checkReuse)
	require.Equal(t, http.StatusServiceUnavailable, probe(t, h, LivenessPath), "a stopped postmaster fails at once")
	require.Equal(t, 1, logins)
}

func TestProcessStoppedReadsTheProcessState(t *testing.T) {
	require.False(t, processStopped(os.Getpid()))
	require.False(t, processStopped(1<<30), "no such process")
}
