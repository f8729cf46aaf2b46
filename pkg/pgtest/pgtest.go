// Package pgtest starts throwaway PostgreSQL servers for tests, from the
// server binaries installed on the machine (Debian/Ubuntu: apt-get install
// postgresql). It is a normal package meant to be imported only by tests.
//
// Each server gets its own data directory under os.TempDir, a free TCP port
// on 127.0.0.1, scram-sha-256 password authentication for TCP (including
// replication), a superuser with a known password, and its Unix socket
// inside the data directory. When the test process runs as root, the server
// runs as the "postgres" OS user (created if missing), because PostgreSQL
// refuses to run as root. Servers are stopped and removed by t.Cleanup, also
// when the test fails; the server log is printed on failure.
//
// Binaries are found via $PG_BINDIR, else `pg_config --bindir`, else the
// highest /usr/lib/postgresql/*/bin. If none is found the test fails (it is
// never skipped) with instructions.
//
// pgtest does not depend on pkg/credential: it exposes host, port, user and
// password, and tests build their own connection parameters.
package pgtest

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
)

// Default superuser credentials.
const (
	DefaultSuperUser     = "postgres"
	DefaultSuperPassword = "pgtest-superuser-password"
)

// Option configures Start and StartStandby.
type Option func(*config)

type config struct {
	settings      [][2]string
	superUser     string
	superPassword string
	hba           []string
}

// WithSetting adds a server setting (postgresql.conf line name = 'value'),
// e.g. WithSetting("log_statement", "all"). Later settings win.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// WithSuperUser sets the bootstrap superuser's name and password.
func WithSuperUser(name, password string) Option {
	return func(c *config) { c.superUser, c.superPassword = name, password }
}

// WithHBA prepends a line to pg_hba.conf (first match wins).
func WithHBA(line string) Option {
	return func(c *config) { c.hba = append(c.hba, line) }
}

// Server is a running (or stopped) throwaway PostgreSQL server.
type Server struct {
	// Host is always 127.0.0.1.
	Host string
	// Port is the TCP port the server listens on.
	Port int
	// SuperUser and SuperPassword are the bootstrap superuser's credentials.
	SuperUser     string
	SuperPassword string
	// Dir is the server's private base directory; DataDir (inside it) is
	// PGDATA and also holds the Unix socket.
	Dir     string
	DataDir string
	// Version is the server's major version, e.g. 15.
	Version int
	// ApplicationName is the name a standby streams under (its row in the
	// primary's pg_stat_replication); empty for a server started by Start.
	ApplicationName string

	t       testing.TB
	bindir  string
	logPath string
	cred    *syscall.Credential // nil when not running as root
	cfg     config

	mu      sync.Mutex
	running bool
}

var (
	bindirOnce sync.Once
	bindirVal  string
	bindirErr  error
)

// BinDir returns the directory holding initdb, pg_ctl, postgres and
// pg_basebackup, or an error explaining how to install them.
func BinDir() (string, error) {
	bindirOnce.Do(func() { bindirVal, bindirErr = findBinDir() })
	return bindirVal, bindirErr
}

func hasServerBinaries(dir string) bool {
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// installHint tells a developer how to get the server binaries.
const installHint = "install them with `apt-get install postgresql` (Debian/Ubuntu; the binaries land in " +
	"/usr/lib/postgresql/<version>/bin) or point PG_BINDIR at the directory holding initdb, pg_ctl and postgres"

// versionedBinGlob is where Debian-style packages install the server.
var versionedBinGlob = "/usr/lib/postgresql/*/bin"

func findBinDir() (string, error) {
	var tried []string
	if d := os.Getenv("PG_BINDIR"); d != "" {
		if hasServerBinaries(d) {
			return d, nil
		}
		return "", fmt.Errorf("PG_BINDIR=%s does not contain the PostgreSQL server binaries (initdb, pg_ctl, postgres); %s", d, installHint)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if hasServerBinaries(d) {
			return d, nil
		}
		tried = append(tried, d+" (from pg_config --bindir)")
	} else {
		tried = append(tried, "pg_config --bindir ("+err.Error()+")")
	}
	matches, _ := filepath.Glob(versionedBinGlob)
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, m := range matches {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(m)), 64)
		if err != nil || !hasServerBinaries(m) {
			tried = append(tried, m)
			continue
		}
		cands = append(cands, cand{m, v})
	}
	if len(cands) > 0 {
		sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
		return cands[0].dir, nil
	}
	tried = append(tried, versionedBinGlob)
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; tried %s; %s",
		strings.Join(tried, ", "), installHint)
}

// runAs returns the credential to run server processes with: nil when not
// root, the "postgres" user (created if needed) when root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		if cerr != nil {
			return nil, fmt.Errorf("running as root and there is no 'postgres' OS user to run the server as "+
				"(PostgreSQL refuses to run as root); creating it with useradd failed: %v: %s", cerr, out)
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("looking up the 'postgres' OS user after creating it: %v", err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("unexpected uid/gid %q/%q for the 'postgres' OS user", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func newConfig(opts []Option) config {
	c := config{superUser: DefaultSuperUser, superPassword: DefaultSuperPassword}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// prepare creates the private base directory and fills in s's fields.
func prepare(t testing.TB, opts []Option) *Server {
	t.Helper()
	bindir, err := BinDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cred, err := runAs()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s := &Server{
		Host:    "127.0.0.1",
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		t:       t,
		bindir:  bindir,
		logPath: filepath.Join(dir, "server.log"),
		cred:    cred,
		cfg:     newConfig(opts),
	}
	s.SuperUser, s.SuperPassword = s.cfg.superUser, s.cfg.superPassword
	// The cleanup is registered before anything can fail, so the directory
	// is removed whatever happens next.
	t.Cleanup(s.cleanup)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.chown(dir)
	if out, err := s.command("postgres", "--version").CombinedOutput(); err == nil {
		// "postgres (PostgreSQL) 15.18 (Debian ...)"
		f := strings.Fields(string(out))
		if len(f) >= 3 {
			s.Version, _ = strconv.Atoi(strings.SplitN(f[2], ".", 2)[0])
		}
	}
	return s
}

// Start initialises and starts a new server. It calls t.Fatalf on failure.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := prepare(t, opts)
	pwfile := filepath.Join(s.Dir, "pwfile")
	s.writeFile(pwfile, s.SuperPassword+"\n", 0o600)
	out, err := s.command("initdb", "-D", s.DataDir, "-U", s.SuperUser, "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync",
	).CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		t.Fatalf("pgtest: initdb failed: %v\n%s", err, out)
	}
	s.appendFile(filepath.Join(s.DataDir, "postgresql.conf"), "\ninclude 'pgtest.conf'\n")
	s.writeHBA()
	s.startFresh()
	return s
}

// StartStandby creates a streaming-replication standby of primary with
// pg_basebackup -R (connecting as primary's superuser over TCP with
// scram-sha-256), starts it, and returns once it streams from primary (see
// WaitForStreaming). Use WaitForReplay to wait for a later change to arrive.
func StartStandby(t testing.TB, primary *Server, opts ...Option) *Server {
	t.Helper()
	s := prepare(t, append([]Option{WithSuperUser(primary.SuperUser, primary.SuperPassword)}, opts...))
	// pg_basebackup -R copies application_name into primary_conninfo, so the
	// standby streams under a name that tells it from the primary's other standbys.
	s.ApplicationName = filepath.Base(s.Dir)
	cmd := s.command("pg_basebackup", "-h", primary.Host, "-p", strconv.Itoa(primary.Port),
		"-U", primary.SuperUser, "-D", s.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync", "-w")
	cmd.Env = append(cmd.Env, "PGPASSWORD="+primary.SuperPassword, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=30",
		"PGAPPNAME="+s.ApplicationName)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: pg_basebackup failed: %v\n%s", err, out)
	}
	// The copied pgtest.conf names the primary's port and socket directory;
	// startFresh rewrites it. The copied pg_hba.conf is fine as is.
	s.startFresh()
	s.WaitForStreaming(t, primary, 2*time.Minute)
	return s
}

// writeHBA replaces pg_hba.conf: trust on the private Unix socket,
// scram-sha-256 on 127.0.0.1 for normal and replication connections.
func (s *Server) writeHBA() {
	var b strings.Builder
	b.WriteString("# written by pgtest\n")
	for _, l := range s.cfg.hba {
		b.WriteString(l + "\n")
	}
	b.WriteString("local all all trust\n")
	b.WriteString("local replication all trust\n")
	b.WriteString("host all all 127.0.0.1/32 scram-sha-256\n")
	b.WriteString("host replication all 127.0.0.1/32 scram-sha-256\n")
	s.writeFile(filepath.Join(s.DataDir, "pg_hba.conf"), b.String(), 0o600)
}

func confQuote(v string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", "''") + "'"
}

func (s *Server) writeConf() {
	set := [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(s.Port)},
		{"unix_socket_directories", s.DataDir},
		{"password_encryption", "scram-sha-256"},
		{"max_connections", "40"},
		{"shared_buffers", "16MB"},
		{"fsync", "off"},
		{"full_page_writes", "off"},
		{"wal_level", "replica"},
		{"max_wal_senders", "5"},
		{"hot_standby", "on"},
		{"logging_collector", "off"},
		{"log_line_prefix", "%m [%p] %q%u@%d "},
		{"log_min_messages", "info"},
		{"dynamic_shared_memory_type", "posix"},
	}
	set = append(set, s.cfg.settings...)
	var b strings.Builder
	b.WriteString("# written by pgtest\n")
	for _, kv := range set {
		b.WriteString(kv[0] + " = " + confQuote(kv[1]) + "\n")
	}
	s.writeFile(filepath.Join(s.DataDir, "pgtest.conf"), b.String(), 0o600)
}

// startFresh picks a free port and starts the server, retrying with another
// port if the chosen one was taken in the meantime.
func (s *Server) startFresh() {
	s.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			s.t.Fatalf("pgtest: finding a free port: %v", err)
		}
		s.Port = port
		s.writeConf()
		if lastErr = s.pgctlStart(); lastErr == nil {
			return
		}
		if !strings.Contains(s.LogContents(), "could not bind") &&
			!strings.Contains(s.LogContents(), "Address already in use") {
			break
		}
	}
	s.t.Fatalf("pgtest: starting server: %v\n--- server log ---\n%s", lastErr, s.LogContents())
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) pgctlStart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.command("pg_ctl", "-D", s.DataDir, "-l", s.logPath, "-w", "-t", "120", "start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	s.running = true
	return nil
}

// Start starts a stopped server again on the same port and data directory.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.pgctlStart(); err != nil {
		s.t.Fatalf("pgtest: restarting server: %v\n--- server log ---\n%s", err, s.LogContents())
	}
}

// Stop stops the server (pg_ctl stop -m fast; on failure the postmaster is
// killed). It is a no-op on a stopped server.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.stop(); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	out, err := s.command("pg_ctl", "-D", s.DataDir, "-m", "fast", "-w", "-t", "30", "stop").CombinedOutput()
	if err == nil {
		s.running = false
		return nil
	}
	if pid := s.postmasterPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGQUIT)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		s.running = false
		return nil
	}
	return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
}

func (s *Server) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(s.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func (s *Server) cleanup() {
	if err := s.stop(); err != nil {
		s.t.Errorf("pgtest: stopping server: %v", err)
	}
	if s.t.Failed() {
		s.t.Logf("pgtest: server log (%s):\n%s", s.DataDir, tail(s.LogContents(), 100))
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		s.t.Errorf("pgtest: removing %s: %v", s.Dir, err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogContents returns the server log so far ("" if there is none yet).
func (s *Server) LogContents() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// LogPath is the server log file.
func (s *Server) LogPath() string { return s.logPath }

// command builds an exec.Cmd for a server binary that runs as the server's
// OS user, in the server's directory, with a clean PG* environment.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bindir, name), args...)
	cmd.Dir = s.Dir
	env := []string{"LC_ALL=C", "LANG=C", "TZ=UTC"}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		cmd.Env = append(cmd.Env, "HOME="+s.Dir)
	}
	return cmd
}

func (s *Server) chown(path string) {
	if s.cred == nil {
		return
	}
	if err := os.Lchown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		s.t.Fatalf("pgtest: chown %s: %v", path, err)
	}
}

func (s *Server) writeFile(path, content string, mode os.FileMode) {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
	s.chown(path)
}

func (s *Server) appendFile(path, content string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(content)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

// DSN returns a lib/pq key=value connection string for user/password over
// TCP to this server's "postgres" database, with sslmode=disable.
func (s *Server) DSN(user, password string) string {
	q := func(v string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `'`, `\'`) + "'"
	}
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10",
		s.Host, s.Port, q(user), q(password))
}

// DB opens a database handle as the superuser; it is closed at cleanup.
func (s *Server) DB(t testing.TB) *sql.DB {
	t.Helper()
	cfg, err := pq.NewConfig(s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	return db
}

// Exec runs sql as the superuser on a new connection, failing the test on
// error.
func (s *Server) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if err := s.ExecErr(query, args...); err != nil {
		t.Fatalf("pgtest: exec %q: %v", query, err)
	}
}

// ExecErr runs sql as the superuser on a new connection and returns the
// error.
func (s *Server) ExecErr(query string, args ...any) error {
	db, err := sql.Open("postgres", s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, query, args...)
	return err
}

// QueryString runs a query returning one value as the superuser and returns
// it as a string ("" for NULL), failing the test on error.
func (s *Server) QueryString(t testing.TB, query string, args ...any) string {
	t.Helper()
	db, err := sql.Open("postgres", s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var v sql.NullString
	if err := db.QueryRowContext(ctx, query, args...).Scan(&v); err != nil {
		t.Fatalf("pgtest: query %q: %v", query, err)
	}
	return v.String
}

// CurrentLSN returns a WAL position on the primary that covers every change
// committed so far and is already flushed (so that it will be streamed even
// if those commits were asynchronous): it commits a transaction with
// synchronous_commit = on, which flushes all WAL before it, and returns
// pg_current_wal_flush_lsn().
func (s *Server) CurrentLSN(t testing.TB) string {
	t.Helper()
	db, err := sql.Open("postgres", s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close()
	var lsn string
	for _, q := range []string{"SET synchronous_commit = on", "SELECT txid_current()"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("pgtest: %s: %v", q, err)
		}
	}
	if err := conn.QueryRowContext(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&lsn); err != nil {
		t.Fatalf("pgtest: reading flush LSN: %v", err)
	}
	return lsn
}

// WaitForReplay blocks until this standby has replayed WAL up to lsn (as
// returned by CurrentLSN on the primary), failing the test after timeout.
// It waits on pg_last_wal_replay_lsn(), polling every few milliseconds.
func (s *Server) WaitForReplay(t testing.TB, lsn string, timeout time.Duration) {
	t.Helper()
	db, err := sql.Open("postgres", s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		var done bool
		err := db.QueryRowContext(ctx,
			"SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)", lsn).Scan(&done)
		if err == nil && done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pgtest: standby did not replay up to %s within %v (last error: %v)", lsn, timeout, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitForStreaming blocks until this standby streams from primary: its WAL
// receiver says "streaming" and the primary's pg_stat_replication lists it
// (by ApplicationName) as "streaming". Replaying the primary's position is not
// enough: a new standby replays what pg_basebackup copied before its WAL
// receiver connects, and a restarted one replays its own pg_wal first. It
// fails the test after timeout.
func (s *Server) WaitForStreaming(t testing.TB, primary *Server, timeout time.Duration) {
	t.Helper()
	if s.ApplicationName == "" {
		t.Fatalf("pgtest: WaitForStreaming on a server that StartStandby did not create")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	standbyDB, err := sql.Open("postgres", s.DSN(s.SuperUser, s.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer standbyDB.Close()
	primaryDB, err := sql.Open("postgres", primary.DSN(primary.SuperUser, primary.SuperPassword))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer primaryDB.Close()
	var receiver, sender string
	for {
		err = standbyDB.QueryRowContext(ctx,
			"SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')").Scan(&receiver)
		if err == nil && receiver == "streaming" {
			err = primaryDB.QueryRowContext(ctx,
				"SELECT coalesce((SELECT state FROM pg_stat_replication WHERE application_name = $1), 'none')",
				s.ApplicationName).Scan(&sender)
			if err == nil && sender == "streaming" {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pgtest: standby %s does not stream from the primary within %v (WAL receiver %q, walsender %q, last error: %v)",
				s.ApplicationName, timeout, receiver, sender, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// LogLines returns the log lines containing substr (handy in assertions).
func (s *Server) LogLines(substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.LogContents()))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// Running reports whether the server is started.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}
