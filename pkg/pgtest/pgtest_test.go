package pgtest_test

import (
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/pgops/pgops/pkg/pgtest"
)

func TestStartExecRestart(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t, pgtest.WithSetting("log_statement", "all"))
	if s.Port == 0 || s.Host != "127.0.0.1" {
		t.Fatalf("bad address %s:%d", s.Host, s.Port)
	}
	s.Exec(t, "CREATE TABLE pgtest_marker (x int)")
	if got := s.QueryString(t, "SHOW password_encryption"); got != "scram-sha-256" {
		t.Fatalf("password_encryption = %q", got)
	}
	if got := s.QueryString(t, "SELECT current_setting('log_statement')"); got != "all" {
		t.Fatalf("log_statement = %q", got)
	}
	if !strings.Contains(s.LogContents(), "CREATE TABLE pgtest_marker") {
		t.Fatalf("statement not in server log")
	}
	s.Stop()
	if err := s.ExecErr("SELECT 1"); err == nil {
		t.Fatalf("query succeeded on a stopped server")
	}
	s.Start()
	if got := s.QueryString(t, "SELECT count(*) FROM pgtest_marker"); got != "0" {
		t.Fatalf("table lost across restart: %q", got)
	}
}

func TestTCPAuthIsSCRAM(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	db, err := sql.Open("postgres", s.DSN(s.SuperUser, "wrong"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Ping()
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) || pqErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
	}
	if got := s.QueryString(t, "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"); !strings.HasPrefix(got, "SCRAM-SHA-256$4096:") {
		t.Fatalf("superuser secret is not SCRAM")
	}
	if got := s.QueryString(t, "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND 'all' = ANY(database) LIMIT 1"); got != "scram-sha-256" {
		t.Fatalf("pg_hba host auth = %q", got)
	}
}

func TestBinDir(t *testing.T) {
	d, err := pgtest.BinDir()
	if err != nil {
		t.Fatalf("BinDir: %v", err)
	}
	t.Logf("bindir %s", d)
}

func TestStandbyStreams(t *testing.T) {
	t.Parallel()
	p := pgtest.Start(t)
	s := pgtest.StartStandby(t, p)
	if got := s.QueryString(t, "SELECT pg_is_in_recovery()"); got != "true" {
		t.Fatalf("standby pg_is_in_recovery = %q", got)
	}
	if s.Port == p.Port || s.DataDir == p.DataDir {
		t.Fatalf("standby shares port or data dir with the primary")
	}
	p.Exec(t, "CREATE TABLE replicated (x int)")
	p.Exec(t, "INSERT INTO replicated VALUES (42)")
	s.WaitForReplay(t, p.CurrentLSN(t), time.Minute)
	if got := s.QueryString(t, "SELECT x FROM replicated"); got != "42" {
		t.Fatalf("standby sees %q", got)
	}
	if got := p.QueryString(t, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"); got != "1" {
		t.Fatalf("primary has %s streaming standbys", got)
	}
	if err := s.ExecErr("CREATE TABLE nope (x int)"); err == nil {
		t.Fatalf("standby accepted a write")
	}
}

func TestCleanupRemovesDirectory(t *testing.T) {
	t.Parallel()
	var dir string
	t.Run("inner", func(t *testing.T) {
		s := pgtest.Start(t)
		dir = s.Dir
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("server directory %s still exists after cleanup (err=%v)", dir, err)
	}
}
