package pgtest_test

import (
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/pgops/pgops/pkg/pgtest"
)

func TestStartExecRestart(t *testing.T) {
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
