package agent_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/pkg/agent"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/pgtest"
)

// pod is the agent running as one database pod, as the postgres OS user when the test runs
// as root.
type pod struct {
	t         *testing.T
	name      string
	base      string // the volume mounted at /var/pv
	port      int
	probePort int
	env       []string
	cmd       *exec.Cmd
	log       *syncBuffer
	done      chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func postgresCredential(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		require.NoError(t, cerr, "creating the postgres OS user: %s", out)
		u, err = user.Lookup("postgres")
		require.NoError(t, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newPod prepares a pod's volume; start runs the agent.
func newPod(t *testing.T, name string, cred *syscall.Credential, env ...string) *pod {
	t.Helper()
	base, err := os.MkdirTemp("", "pgops-pod-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(base, 0o700))
	if cred != nil {
		require.NoError(t, os.Chown(base, int(cred.Uid), int(cred.Gid)))
	}
	p := &pod{t: t, name: name, base: base, port: freeTCPPort(t), probePort: freeTCPPort(t), env: env}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", p.name, p.logText())
		}
		os.RemoveAll(base)
	})
	return p
}

func (p *pod) logText() string {
	if p.log == nil {
		return ""
	}
	return p.log.String()
}

// start runs the agent as cred. As root it runs in a private mount namespace with the
// pod's own directory at /var/run/postgresql, as the pod's emptyDir is there.
func (p *pod) start(cred *syscall.Credential, bindir, agentPath string, extraEnv ...string) {
	p.t.Helper()
	probePort := "--probe-port=" + strconv.Itoa(p.probePort)
	cmd := exec.Command(agentPath, "run", probePort)
	if cred != nil {
		runDir := filepath.Join(p.base, "run")
		require.NoError(p.t, os.MkdirAll(runDir, 0o775))
		require.NoError(p.t, os.Chown(runDir, int(cred.Uid), int(cred.Gid)))
		wrapper := fmt.Sprintf("mkdir -p %[1]s && mount --bind %[2]s %[1]s && exec setpriv --reuid=%[3]d --regid=%[4]d --clear-groups -- %[5]s run %[6]s",
			agent.RunDir, runDir, cred.Uid, cred.Gid, agentPath, probePort)
		cmd = exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", wrapper)
		cred = nil // setpriv drops to it
	}
	cmd.Env = append([]string{
		"PATH=" + bindir + ":/usr/bin:/bin",
		"HOME=" + p.base,
		"PGDATA=" + filepath.Join(p.base, "data"),
		"POD_NAME=" + p.name,
		"POD_IP=127.0.0.1",
		"PGPORT=" + strconv.Itoa(p.port),
		"STANDBY_MODE=Hot",
		"LC_ALL=C",
	}, append(p.env, extraEnv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if p.log == nil {
		p.log = &syncBuffer{}
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	require.NoError(p.t, cmd.Start())
	p.cmd = cmd
	p.done = make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
}

// stop sends SIGINT to the agent, which passes it on to postgres (a fast shutdown).
func (p *pod) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

func (p *pod) target() credential.Target {
	return credential.Target{Host: "127.0.0.1", Port: p.port, SSLMode: "disable", ConnectTimeout: 2 * time.Second}
}

// waitLogin waits until user/password can log in.
func (p *pod) waitLogin(user, password string) {
	p.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.t.Fatalf("%s exited: %v\n%s", p.name, err, p.logText())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ok, err := credential.VerifyLogin(ctx, p.target(), user, password)
		cancel()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("%s: no login within 90s (last error %v)\n%s", p.name, lastErr, p.logText())
}

func (p *pod) db(user, password string) *sql.DB {
	p.t.Helper()
	c, err := pq.NewConnector(fmt.Sprintf("host=127.0.0.1 port=%d user=%s password='%s' dbname=postgres sslmode=disable connect_timeout=5",
		p.port, user, strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(password)))
	require.NoError(p.t, err)
	db := sql.OpenDB(c)
	p.t.Cleanup(func() { db.Close() })
	return db
}

func waitForValue(t *testing.T, db *sql.DB, query, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if err = db.QueryRow(query).Scan(&got); err == nil && got == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("query %q: want %q, got %q (err %v)", query, want, got, err)
}

// TestAgentPrimaryAndStandby runs the agent for real with the installed PostgreSQL server
// binaries: a primary, a streaming standby, and a standby restart after a password change.
func TestAgentPrimaryAndStandby(t *testing.T) {
	bindir, cred, script := setUpAgentTest(t)

	const user = "postgres"
	password := `first pa$$word with 'quotes' and \backslash: `
	newPassword := "second-Password-2"

	primary := newPod(t, "x-0", cred, "POSTGRES_USER="+user)
	primary.start(cred, bindir, script, "POSTGRES_PASSWORD="+password)
	primary.waitLogin(user, password)

	ctx := context.Background()
	ok, err := credential.VerifyLogin(ctx, primary.target(), user, "wrong-password")
	require.NoError(t, err)
	require.False(t, ok, "a wrong password must be rejected (scram-sha-256 over TCP)")

	pdb := primary.db(user, password)
	var enc, listen, sockets string
	require.NoError(t, pdb.QueryRow("SHOW password_encryption").Scan(&enc))
	require.NoError(t, pdb.QueryRow("SHOW listen_addresses").Scan(&listen))
	require.NoError(t, pdb.QueryRow("SHOW unix_socket_directories").Scan(&sockets))
	require.Equal(t, "scram-sha-256", enc)
	require.Equal(t, "*", listen, "every address of the pod")
	require.Equal(t, agent.RunDir, sockets)
	hba, err := os.ReadFile(filepath.Join(primary.base, "data", "pg_hba.conf"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(hba), "# Written by pgops at every start"), "pgops rules, not initdb ones:\n%s", hba)
	require.Contains(t, string(hba), "host    all          all   0.0.0.0/0  scram-sha-256")
	if cred != nil {
		// In the pod's mount namespace, psql finds the server on its socket and the OS
		// user postgres logs in by peer, as `kubectl exec <pod> -- psql -U postgres` does.
		out, err := exec.Command("nsenter", "--target", strconv.Itoa(primary.cmd.Process.Pid), "--mount", "--",
			"setpriv", "--reuid="+strconv.Itoa(int(cred.Uid)), "--regid="+strconv.Itoa(int(cred.Gid)), "--clear-groups", "--",
			filepath.Join(bindir, "psql"), "-p", strconv.Itoa(primary.port), "-U", "postgres", "-d", "postgres", "-Atc", "SELECT current_user").CombinedOutput()
		require.NoError(t, err, "psql over the Unix socket: %s", out)
		require.Equal(t, "postgres", strings.TrimSpace(string(out)))
		// The agent's environment holds the password; the server's user cannot read it.
		out, err = exec.Command("setpriv", "--reuid="+strconv.Itoa(int(cred.Uid)), "--regid="+strconv.Itoa(int(cred.Gid)), "--clear-groups", "--",
			"cat", fmt.Sprintf("/proc/%d/environ", primary.cmd.Process.Pid)).CombinedOutput()
		require.Error(t, err, "the postgres user reads the agent's environment: %q", out)
		require.NotContains(t, string(out), password)
	}
	_, err = pdb.Exec("CREATE TABLE t (v text); INSERT INTO t VALUES ('before-standby')")
	require.NoError(t, err)

	standby := newPod(t, "x-1", cred, "POSTGRES_USER="+user,
		"PRIMARY_HOST=127.0.0.1", "PRIMARY_PORT="+strconv.Itoa(primary.port))
	standby.start(cred, bindir, script, "POSTGRES_PASSWORD="+password)
	standby.waitLogin(user, password)
	sdb := standby.db(user, password)
	var inRecovery bool
	require.NoError(t, sdb.QueryRow("SELECT pg_is_in_recovery()").Scan(&inRecovery))
	require.True(t, inRecovery, "x-1 must be a standby")
	waitForValue(t, sdb, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "before-standby")
	_, err = pdb.Exec("INSERT INTO t VALUES ('streamed')")
	require.NoError(t, err)
	waitForValue(t, sdb, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "before-standby,streamed")
	waitForValue(t, sdb, "SELECT status FROM pg_stat_wal_receiver", "streaming")

	// The password never reaches the configuration, argv or the log.
	for _, p := range []*pod{primary, standby} {
		require.NotContains(t, p.logText(), password)
		require.NotContains(t, p.logText(), newPassword)
	}
	autoConf, err := os.ReadFile(filepath.Join(standby.base, "data", "postgresql.auto.conf"))
	require.NoError(t, err)
	require.Contains(t, string(autoConf), "primary_conninfo")
	require.Contains(t, string(autoConf), "tcp_user_timeout=5000", "a reconnect to a replaced primary gives up on a dead address in 5 s")
	require.NotContains(t, string(autoConf), password)
	_, err = os.Stat(filepath.Join(standby.base, "data", "standby.signal"))
	require.NoError(t, err)
	entries, err := os.ReadDir(primary.base)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), "pwfile", "initdb's password file must be removed")
	}

	// Rotate: change the password on the primary, restart the standby with the new one.
	require.NoError(t, credential.SetPassword(ctx, withUser(primary.target(), user, password), user, newPassword))
	_, err = pdb.Exec("SELECT 1") // the open connection survives
	require.NoError(t, err)
	if cred != nil {
		repointRunningStandby(t, ctx, primary, standby, user, newPassword)
	}
	// The standby restarts with the new credential in its environment.
	standby.stop()
	standby.start(cred, bindir, script, "POSTGRES_PASSWORD="+newPassword)
	standby.waitLogin(user, newPassword)
	pdb2 := primary.db(user, newPassword)
	_, err = pdb2.Exec("INSERT INTO t VALUES ('after-rotation')")
	require.NoError(t, err)
	sdb2 := standby.db(user, newPassword)
	waitForValue(t, sdb2, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "after-rotation,before-standby,streamed")
	waitForValue(t, sdb2, "SELECT status FROM pg_stat_wal_receiver", "streaming")

	// The primary restarts on its existing data directory.
	primary.stop()
	primary.start(cred, bindir, script, "POSTGRES_PASSWORD="+newPassword)
	primary.waitLogin(user, newPassword)
	require.Equal(t, 1, strings.Count(primary.logText(), "Initialising a new primary"))
	for _, p := range []*pod{primary, standby} {
		require.NotContains(t, p.logText(), password)
		require.NotContains(t, p.logText(), newPassword)
	}
}

func withUser(t credential.Target, user, password string) credential.Target {
	t.User, t.Password = user, password
	return t
}

// setUpAgentTest skips with -short, and returns the PostgreSQL binaries, the credential of
// the OS user postgres to run the agent as (nil unless the test runs as root) and the
// agent binary.
func setUpAgentTest(t *testing.T) (bindir string, cred *syscall.Credential, agentBinary string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real PostgreSQL servers")
	}
	bindir, err := pgtest.BinDir()
	require.NoError(t, err)
	return bindir, postgresCredential(t), buildAgent(t)
}

// buildAgent builds cmd/pgops-agent into a directory the postgres OS user can read.
func buildAgent(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgops-agent-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "pgops-agent")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/pgops/pgops/cmd/pgops-agent").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// agentURL is where the pod's agent listens.
func (p *pod) agentURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.probePort) }

// repointRunningStandby gives the running standby the credential its primary has just
// taken, through its agent, as the ops-manager does in restart mode None: refused until the
// standby has replayed it, and for any other password; once taken, the standby streams on
// a new WAL receiver, which authenticated with it. The agent checks the credential by peer
// login, so only a root test runs this.
func repointRunningStandby(t *testing.T, ctx context.Context, primary, standby *pod, user, password string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	var refused *agent.AgentError
	_, err := agent.RepointStandby(ctx, client, standby.agentURL(), user, "Not-the-password-9")
	require.ErrorAs(t, err, &refused)
	require.Equal(t, http.StatusForbidden, refused.Status, refused.Message)
	_, err = agent.RepointStandby(ctx, client, primary.agentURL(), user, password)
	require.ErrorAs(t, err, &refused)
	require.Equal(t, http.StatusConflict, refused.Status, "the primary has no passfile: %s", refused.Message)

	sdb := standby.db(user, password)
	receiver := func() (pid int, streaming bool) {
		_ = sdb.QueryRow(`SELECT pid, status = 'streaming' FROM pg_stat_wal_receiver`).Scan(&pid, &streaming)
		return pid, streaming
	}
	before, _ := receiver()
	require.NotZero(t, before, "the standby streams")
	require.Eventually(t, func() bool {
		written, err := agent.RepointStandby(ctx, client, standby.agentURL(), user, password)
		return err == nil && written
	}, time.Minute, 50*time.Millisecond, "the standby's agent takes the credential once its server has replayed it")
	after, streaming := receiver()
	require.True(t, streaming, "the agent answers once the standby streams")
	require.NotEqual(t, before, after, "on a new WAL receiver, which connected with the new credential")
	passfile, err := os.ReadFile(filepath.Join(standby.base, ".pgpass"))
	require.NoError(t, err)
	require.Contains(t, string(passfile), agent.PassfileStamp)

	written, err := agent.RepointStandby(ctx, client, standby.agentURL(), user, password)
	require.NoError(t, err)
	require.False(t, written, "a passfile holding the credential is left alone")
	again, _ := receiver()
	require.Equal(t, after, again, "and a receiver that connected with it too")
}

// probe asks the pod's agent one probe path and returns the HTTP status (0: no answer).
func (p *pod) probe(path string) int {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", p.probePort, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitProbe waits until path answers want.
func (p *pod) waitProbe(path string, want int) {
	p.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		if got = p.probe(path); got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("%s %s: want %d, got %d\n%s", p.name, path, want, got, p.logText())
}

// postmasterPID is the server's PID from postmaster.pid.
func (p *pod) postmasterPID() int {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.base, "data", "postmaster.pid"))
	require.NoError(p.t, err)
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	require.NoError(p.t, err)
	return pid
}

// TestAgentProbesCatchAHungServer: liveness fails while every process of the server is
// stopped (a hung server answers no query within the deadline) and passes again once it
// runs; readiness follows. The probes log in by peer on the Unix socket, so only a root
// test (the OS user postgres) can run it.
func TestAgentProbesCatchAHungServer(t *testing.T) {
	bindir, cred, bin := setUpAgentTest(t)
	if cred == nil {
		t.Skip("the agent's peer login needs the OS user postgres: run as root")
	}
	primary := newPod(t, "hung-0", cred, "POSTGRES_USER=postgres")
	primary.start(cred, bindir, bin, "POSTGRES_PASSWORD=pw-hung-test")
	primary.waitProbe(agent.StartupPath, http.StatusOK)
	primary.waitProbe(agent.ReadinessPath, http.StatusOK)
	primary.waitProbe(agent.LivenessPath, http.StatusOK)

	pid := primary.postmasterPID()
	// Only the postmaster stops: the kept backend still answers, but no new connection is
	// accepted. Liveness makes a new one; readiness uses the kept one.
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	primary.waitProbe(agent.LivenessPath, http.StatusServiceUnavailable)
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	primary.waitProbe(agent.LivenessPath, http.StatusOK)

	// Stop the postmaster and its children (a hung node stops them all).
	out, err := exec.Command("pkill", "-STOP", "-P", strconv.Itoa(pid)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() {
		_ = exec.Command("pkill", "-CONT", "-P", strconv.Itoa(pid)).Run()
		_ = syscall.Kill(pid, syscall.SIGCONT)
	})
	primary.waitProbe(agent.LivenessPath, http.StatusServiceUnavailable)
	primary.waitProbe(agent.ReadinessPath, http.StatusServiceUnavailable)

	require.NoError(t, exec.Command("pkill", "-CONT", "-P", strconv.Itoa(pid)).Run())
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	primary.waitProbe(agent.LivenessPath, http.StatusOK)
	primary.waitProbe(agent.ReadinessPath, http.StatusOK)
}

// TestAgentStopsWithPostgres: the kubelet's SIGTERM reaches postgres (a smart shutdown,
// which waits for every session: the agent closes its own first), and the agent exits with
// it, 0 for a clean stop.
func TestAgentStopsWithPostgres(t *testing.T) {
	bindir, cred, bin := setUpAgentTest(t)
	primary := newPod(t, "term-0", cred, "POSTGRES_USER=postgres")
	primary.start(cred, bindir, bin, "POSTGRES_PASSWORD=pw-term-test")
	primary.waitLogin("postgres", "pw-term-test")
	if cred != nil {
		// The probes' kept connection is open: a smart shutdown must not wait for it.
		primary.waitProbe(agent.ReadinessPath, http.StatusOK)
	}
	pid := primary.postmasterPID()
	require.NoError(t, primary.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-primary.done:
		require.NoError(t, err, "a clean stop exits 0\n%s", primary.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not exit\n%s", primary.logText())
	}
	primary.cmd = nil
	require.Error(t, syscall.Kill(pid, 0), "postgres has stopped")
	require.Contains(t, primary.logText(), "Passing a signal on to postgres")
}

// TestAgentWarmStandbyIsReadyWhileRejectingConnections: a warm standby rejects every
// connection by design; it is ready when it answers.
func TestAgentWarmStandbyIsReadyWhileRejectingConnections(t *testing.T) {
	bindir, cred, bin := setUpAgentTest(t)
	const password = "pw-warm-test"
	primary := newPod(t, "warm-0", cred, "POSTGRES_USER=postgres", "STANDBY_MODE=Warm")
	primary.start(cred, bindir, bin, "POSTGRES_PASSWORD="+password)
	primary.waitLogin("postgres", password)
	standby := newPod(t, "warm-1", cred, "POSTGRES_USER=postgres", "STANDBY_MODE=Warm",
		"PRIMARY_HOST=127.0.0.1", "PRIMARY_PORT="+strconv.Itoa(primary.port))
	standby.start(cred, bindir, bin, "POSTGRES_PASSWORD="+password)
	standby.waitProbe(agent.ReadinessPath, http.StatusOK)
	require.Equal(t, http.StatusOK, standby.probe(agent.LivenessPath))
	ok, err := credential.VerifyLogin(context.Background(), standby.target(), "postgres", password)
	require.Error(t, err, "a warm standby rejects connections")
	require.False(t, ok)
}
