package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/pgtest"
)

// pgbenchClient is pgbench, a client the project did not write, running TPC-B-like
// transactions against a database's primary on a few long-lived sessions, with a progress
// line every second. pgbench reconnects nothing: a session the server ends aborts its client.
type pgbenchClient struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

// lockedWriter lets exec write pgbench's output while the test reads it.
type lockedWriter struct{ p *pgbenchClient }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// startPgbench initialises pgbench's tables through target as user/password and starts 4
// clients at a modest rate (the machine also runs the control plane and every pod).
func startPgbench(t testing.TB, ctx context.Context, target credential.Target, user, password string) *pgbenchClient {
	t.Helper()
	bin, err := pgtest.BinDir()
	require.NoError(t, err)
	pgbench := filepath.Join(bin, "pgbench")
	conn := []string{"-h", target.Host, "-p", strconv.Itoa(target.Port), "-U", user}
	environ := append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")

	init := exec.CommandContext(ctx, pgbench, append(append([]string{"-i", "-s", "1", "-q"}, conn...), "postgres")...)
	init.Env = environ
	out, err := init.CombinedOutput()
	require.NoError(t, err, "pgbench -i: %s", out)

	p := &pgbenchClient{done: make(chan error, 1)}
	p.cmd = exec.CommandContext(ctx, pgbench, append(append([]string{"-n", "-c", "4", "-j", "2", "-R", "100", "-T", "900", "-P", "1"}, conn...), "postgres")...)
	p.cmd.Env = environ
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	p.waitProgress(t, 2)
	return p
}

var progressLine = regexp.MustCompile(`(?m)^progress: ([0-9.]+) s, ([0-9.]+) tps, .*?(?:, ([0-9]+) failed)?$`)

// abortedClient matches pgbench's "client 2 aborted in command 4" and PostgreSQL 15's
// "client 2 script 0 aborted in command 4 query 0".
var abortedClient = regexp.MustCompile(`client [0-9]+ (?:script [0-9]+ )?aborted`)

// progress is pgbench's progress lines so far: per second, transactions and failures, and
// its clients aborted (a session the server ended).
type progress struct {
	seconds      []float64
	tps          []float64
	failed       int
	aborted      int
	abortedLines []string
}

func (p *pgbenchClient) progress() progress {
	p.mu.Lock()
	text := p.out.String()
	p.mu.Unlock()
	var pr progress
	for _, m := range progressLine.FindAllStringSubmatch(text, -1) {
		sec, _ := strconv.ParseFloat(m[1], 64)
		tps, _ := strconv.ParseFloat(m[2], 64)
		failed, _ := strconv.Atoi(m[3])
		pr.seconds, pr.tps, pr.failed = append(pr.seconds, sec), append(pr.tps, tps), pr.failed+failed
	}
	pr.aborted = len(abortedClient.FindAllString(text, -1))
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "aborted") || strings.Contains(line, "terminating connection") {
			pr.abortedLines = append(pr.abortedLines, line)
		}
	}
	return pr
}

// waitProgress waits until pgbench has reported n more seconds of progress.
func (p *pgbenchClient) waitProgress(t testing.TB, n int) {
	t.Helper()
	start := len(p.progress().seconds)
	deadline := time.Now().Add(time.Minute)
	for len(p.progress().seconds) < start+n {
		select {
		case err := <-p.done:
			t.Fatalf("pgbench ended early (%v):\n%s", err, p.output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbench reported no progress for a minute:\n%s", p.output())
		}
	}
}

// stop ends pgbench after two more seconds of progress, and returns what it reported.
func (p *pgbenchClient) stop(t testing.TB) progress {
	t.Helper()
	p.waitProgress(t, 2)
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	<-p.done
	return p.progress()
}

// stopAfterRecovery is stop for a run whose clients may all have been aborted (pgbench
// then ends by itself).
func (p *pgbenchClient) stopAfterRecovery(t testing.TB) progress {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return p.progress()
	default:
	}
	if p.progress().aborted < 4 {
		return p.stop(t)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	<-p.done
	return p.progress()
}

func (p *pgbenchClient) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}
