package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// Probe paths the agent answers. The kubelet's probes start no process: each is an HTTP
// request answered from one connection to the server that the agent keeps open.
const (
	StartupPath   = "/startupz"
	ReadinessPath = "/readyz"
	LivenessPath  = "/livez"
)

// serverPhase is where the server's life is, as the agent runs it.
type serverPhase int32

const (
	// preparing: the data directory is being made ready (an initdb, a clone as long as the
	// data is large); the pod is alive but not ready.
	preparing serverPhase = iota
	// running: postgres has been started; the server's answers decide.
	running
	// stopping: postgres was asked to shut down; alive, not ready.
	stopping
	// stopped: postgres exited; the agent exits too.
	stopped
)

// Timings of the checks.
const (
	// checkTimeout bounds each read and write of a check: a server that does not answer a
	// trivial query within it is hung. Below the probes' 5 s timeout.
	checkTimeout = 3 * time.Second
	// checkReuse: probes that arrive together (startup, readiness and liveness, or several
	// kubelet retries) share one check.
	checkReuse = 100 * time.Millisecond
	// startupWait is how long a startup probe waits for the server to be ready before it
	// answers whether it is alive: a restarted pod is Ready as soon as its server is, not a
	// readiness period later (the kubelet runs the readiness probe right after the
	// startup probe passes).
	startupWait       = time.Second
	startupPollPeriod = 100 * time.Millisecond
	// startupPreparingGrace is how long the startup probe fails while the data directory
	// is prepared, so that it passes when the server is ready. After it the probe passes
	// while preparing, as liveness does, so a clone longer than the pod's startup budget
	// (the provisioner gives 600 probes a second apart, 10 minutes) is not killed.
	startupPreparingGrace = 8 * time.Minute
	// loginEvery is how often liveness makes a new connection while logins succeed: each
	// is a backend the server forks, the main idle cost of a probe.
	loginEvery = 2 * time.Minute
)

// serverState is one check's result.
type serverState struct {
	phase  serverPhase
	answer answer
	err    error
}

// health answers the kubelet's probes.
type health struct {
	cfg     *Config
	started time.Time // when the agent started
	db      *sql.DB   // the kept connection (nil in tests)
	phase   atomic.Int32
	// query runs the check on the kept connection; closeConn closes it. login makes and
	// closes a new connection: the postmaster forks a backend for it.
	query     func() error
	closeConn func() error
	login     func() error
	// postmasterStopped tells whether the postmaster's process is stopped; nil before it
	// runs.
	postmasterStopped func() bool
	// standbySignal tells whether the data directory is a standby's.
	standbySignal func() bool

	mu       sync.Mutex
	queried  checkResult // the last query on the kept connection
	loggedIn checkResult // the last new login
}

// newHealth checks the server through a connection over its Unix socket, logging in by peer
// as the superuser (pgops's pg_hba.conf allows it to the OS user postgres without a
// password, so a rotation does not affect it).
func newHealth(cfg *Config) (*health, error) {
	connector, err := newConnector([][2]string{
		{"host", cfg.RunDir}, {"port", fmt.Sprint(cfg.Port)}, {"user", cfg.User}, {"dbname", "postgres"},
		{"sslmode", "disable"}, {"application_name", "pgops-agent"},
	}, checkTimeout)
	if err != nil {
		return nil, err
	}
	db := openDB(connector)
	h := &health{cfg: cfg, started: time.Now(), db: db, closeConn: db.Close}
	h.query = func() error {
		var one int
		return db.QueryRowContext(context.Background(), "SELECT 1").Scan(&one)
	}
	h.login = func() error {
		conn, err := connector.Connect(context.Background())
		if err != nil {
			return err
		}
		return conn.Close()
	}
	h.standbySignal = func() bool {
		_, err := os.Stat(filepath.Join(cfg.DataDir, "standby.signal"))
		return err == nil
	}
	return h, nil
}

func (h *health) setPhase(p serverPhase) { h.phase.Store(int32(p)) }

// setPostmaster makes the checks look at the postmaster's process pid.
func (h *health) setPostmaster(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.postmasterStopped = func() bool { return processStopped(pid) }
}

// processStopped tells whether the process pid is stopped (state T or t in its stat).
func processStopped(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(rest) > 0 && (rest[0] == "T" || rest[0] == "t")
}

// stop ends the checks and closes the kept connection, before postgres is asked to stop:
// PostgreSQL's smart shutdown (the kubelet's SIGTERM) waits for every session to end, the
// agent's own too, until the kubelet kills it at the end of the grace period.
func (h *health) stop() {
	h.mu.Lock() // waits for a check under way
	defer h.mu.Unlock()
	if serverPhase(h.phase.Load()) != stopped {
		h.setPhase(stopping)
	}
	if h.closeConn != nil {
		if err := h.closeConn(); err != nil {
			klog.ErrorS(err, "Closing the probes' connection")
		}
	}
}

// check asks the server, or returns the answer of a check that ended a moment ago. Checks
// do not overlap.
//
// A check is a query on the kept connection, which its backend answers. With newLogin (the
// liveness probe) it also looks at the postmaster, which the kept backend does not need: a
// stopped postmaster process fails it at once, and every loginEvery a new connection, which
// the postmaster must accept and fork a backend for as every client's, catches one that
// hangs otherwise or cannot fork. A failed login is tried again at the next probe.
// Readiness, every 10 s, and the startup polls fork no backend.
func (h *health) check(newLogin bool) serverState {
	h.mu.Lock()
	defer h.mu.Unlock()
	phase := serverPhase(h.phase.Load())
	if phase != running {
		return serverState{phase: phase}
	}
	now := time.Now()
	if now.Sub(h.queried.at) >= checkReuse {
		err := h.query()
		h.queried = checkResult{answer: classify(err), err: err, at: time.Now()}
	}
	s := serverState{phase: running, answer: h.queried.answer, err: h.queried.err}
	if !newLogin || s.answer != accepting {
		return s
	}
	if h.postmasterStopped != nil && h.postmasterStopped() {
		return serverState{phase: running, answer: noResponse, err: errPostmasterStopped}
	}
	if age := now.Sub(h.loggedIn.at); age >= loginEvery || (h.loggedIn.answer != accepting && age >= checkReuse) {
		err := h.login()
		h.loggedIn = checkResult{answer: classify(err), err: err, at: time.Now()}
	}
	if h.loggedIn.answer != accepting {
		s.answer, s.err = h.loggedIn.answer, h.loggedIn.err
	}
	return s
}

// errPostmasterStopped: the postmaster's process is stopped (SIGSTOP, a debugger).
var errPostmasterStopped = errors.New("the postmaster is stopped")

// checkResult is the answer to one query or login, and when it came.
type checkResult struct {
	answer answer
	err    error
	at     time.Time
}

// alive: liveness passes while the data directory is prepared and while the server
// answers within checkTimeout, even to reject a connection (starting up, recovering, a warm
// standby): a dead or hung server fails it.
func (h *health) alive(s serverState) bool {
	return s.phase == preparing || s.phase == stopping || (s.phase == running && s.answer >= rejecting)
}

// ready: the server accepts connections; a warm standby, which rejects them by design, is
// ready when it answers.
func (h *health) ready(s serverState) bool {
	if s.phase != running {
		return false
	}
	return s.answer == accepting ||
		(h.cfg.StandbyMode == Warm && s.answer == rejecting && h.standbySignal())
}

// reason says in a few words why a probe fails, for the pod's events; never a secret.
func reason(s serverState) string {
	switch {
	case s.phase == preparing:
		return "preparing the data directory"
	case s.phase == stopping:
		return "postgres is shutting down"
	case s.phase == stopped:
		return "postgres has exited"
	case s.answer == noResponse:
		return "the server does not answer"
	case s.answer == rejecting:
		return "the server does not accept connections yet"
	}
	return "ok"
}

// handler serves the probe paths.
func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, ok bool, s serverState) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, reason(s))
	}
	mux.HandleFunc("GET "+LivenessPath, func(w http.ResponseWriter, r *http.Request) {
		s := h.check(true)
		answer(w, h.alive(s), s)
	})
	mux.HandleFunc("GET "+ReadinessPath, func(w http.ResponseWriter, r *http.Request) {
		s := h.check(false)
		answer(w, h.ready(s), s)
	})
	mux.HandleFunc("GET "+StartupPath, func(w http.ResponseWriter, r *http.Request) {
		s := h.waitReady(r.Context(), startupWait)
		if s.phase == preparing && time.Since(h.started) < startupPreparingGrace {
			// Not started yet: the kubelet asks again in a second, and probes readiness
			// right after the startup probe passes, so a pod whose initdb or clone takes
			// seconds is Ready as soon as its server is, not a readiness period later.
			answer(w, false, s)
			return
		}
		answer(w, h.ready(s) || h.alive(s), s)
	})
	return mux
}

// waitReady checks every startupPollPeriod until the server is ready or wait has passed.
func (h *health) waitReady(ctx context.Context, wait time.Duration) serverState {
	deadline := time.Now().Add(wait)
	for {
		s := h.check(false)
		if h.ready(s) || s.phase == stopping || s.phase == stopped || time.Now().After(deadline) {
			return s
		}
		select {
		case <-ctx.Done():
			return s
		case <-time.After(startupPollPeriod):
		}
	}
}
