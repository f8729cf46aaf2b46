package agent

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/pgops/pgops/pkg/credential"
)

// StandbyPassfilePath is where the ops-manager gives a running standby a new credential
// (a RotateAuth in restart mode None): PUT a PassfileRequest.
const StandbyPassfilePath = "/v1/standby/passfile"

// maxRequestBytes bounds a request body: a credential is a few hundred bytes.
const maxRequestBytes = 4096

// PassfileRequest is the credential a running standby is to connect to its primary with.
type PassfileRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// PassfileResponse says whether the passfile changed; the agent answers once the standby
// streams on a connection that used it.
type PassfileResponse struct {
	Written bool `json:"written"`
}

// PassfileStamp starts the comment line the agent puts first in a running standby's
// passfile when it re-points it (libpq skips lines starting with #), followed by the time
// of writing by the server's clock, as PostgreSQL prints a timestamptz: a WAL receiver
// that started before it authenticated with the previous credential.
const PassfileStamp = "# written by pgops at "

// streamWait bounds how long a re-point waits for the WAL receiver to stream on a
// connection made with the new credential; the ops-manager asks again after a refusal.
const streamWait = 5 * time.Second

// receiverPoll is how often the agent looks at the WAL receiver while it reconnects.
const receiverPoll = 20 * time.Millisecond

// standbyFacts is what the standby's own server says about the credential asked for.
type standbyFacts struct {
	inRecovery bool
	// verifier is the role's rolpassword in pg_authid, replayed from the primary.
	verifier sql.NullString
	// now is the server's clock_timestamp(), as PostgreSQL prints a timestamptz.
	now string
}

// receiverState is the standby's WAL receiver as its server reports it.
type receiverState struct {
	pid int // 0: none runs
	// streaming: it streams from the primary.
	streaming bool
	// startedSince: it started after the time asked about.
	startedSince bool
}

// repointer rewrites the running standby's passfile.
//
// Trust: the caller proves it holds the database's credential. The agent writes the
// passfile only with a password that matches the role's SCRAM verifier in this standby's
// own pg_authid, which only a superuser of the primary can have set (it arrives by
// replication), so a pod of another database, or anyone without this database's
// credential, can change nothing; knowing the credential, a caller can only make the
// passfile hold the credential the database already has. No token is distributed and no
// Kubernetes permission is needed. The password is verified in the agent, so it reaches
// no SQL statement and no server log.
type repointer struct {
	cfg *Config
	// facts and receiver ask the local server, signal ends a WAL receiver; tests replace
	// them.
	facts    func(ctx context.Context, username string) (standbyFacts, error)
	receiver func(ctx context.Context, since string) (receiverState, error)
	signal   func(pid int) error
	wait     time.Duration // streamWait
	mu       sync.Mutex    // one re-point at a time
}

func newRepointer(cfg *Config, db *sql.DB) *repointer {
	return &repointer{cfg: cfg, wait: streamWait,
		facts: func(ctx context.Context, username string) (standbyFacts, error) {
			var f standbyFacts
			err := db.QueryRowContext(ctx, `SELECT pg_catalog.pg_is_in_recovery(),
				(SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1),
				pg_catalog.clock_timestamp()::text`, username).Scan(&f.inRecovery, &f.verifier, &f.now)
			return f, err
		},
		receiver: func(ctx context.Context, since string) (receiverState, error) {
			var st receiverState
			var pid sql.NullInt64
			var streaming, startedSince sql.NullBool
			err := db.QueryRowContext(ctx, `SELECT r.pid, r.status = 'streaming',
				a.backend_start > coalesce($1::timestamptz, '-infinity')
				FROM pg_catalog.pg_stat_wal_receiver r
				LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = r.pid`, nullIfEmpty(since)).Scan(&pid, &streaming, &startedSince)
			if errors.Is(err, sql.ErrNoRows) {
				return st, nil
			}
			st.pid, st.streaming, st.startedSince = int(pid.Int64), streaming.Bool, startedSince.Bool
			return st, err
		},
		// The WAL receiver is a child of the postmaster, the agent's child, and runs as
		// the same user. On SIGTERM it exits, and the startup process starts another,
		// which connects with the passfile as it is now.
		signal: func(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) },
	}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (p *repointer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, format string, args ...any) {
		http.Error(w, fmt.Sprintf(format, args...), code)
	}
	var req PassfileRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(http.StatusBadRequest, "the body is not a credential: a JSON object with username and password, at most %d bytes", maxRequestBytes)
		return
	}
	// The errors name the broken rule, never the value.
	if err := credential.ValidatePodUsername(req.Username); err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	if err := credential.ValidatePodPassword(req.Password); err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	if p.cfg.IsPrimary() {
		fail(http.StatusConflict, "%s is the primary; only a standby has a passfile", p.cfg.PodName)
		return
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	facts, err := p.facts(r.Context(), req.Username)
	if err != nil {
		fail(http.StatusServiceUnavailable, "asking the server: %v", redact(err, req.Password))
		return
	}
	if !facts.inRecovery {
		fail(http.StatusConflict, "the server of %s is not in recovery: it is no standby", p.cfg.PodName)
		return
	}
	v, err := credential.ParseVerifier(facts.verifier.String)
	if !facts.verifier.Valid || err != nil || !v.Matches(req.Password) {
		fail(http.StatusForbidden, "this is not the credential of role %q on this standby: "+
			"it has not replayed the change yet, or the password is wrong", req.Username)
		return
	}
	written, stamp, err := writeRepointedPassfile(p.cfg.Passfile(), credential.PassfileLine(req.Username, req.Password), facts.now)
	if err != nil {
		fail(http.StatusInternalServerError, "writing the passfile: %v", err)
		return
	}
	if written {
		klog.InfoS("Re-pointed the standby: its next connection to the primary uses the new credential", "user", req.Username)
	}
	if err := p.reconnect(r.Context(), stamp); err != nil {
		fail(http.StatusServiceUnavailable, "the passfile holds the credential, but %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(PassfileResponse{Written: written})
}

// reconnect makes the WAL receiver connect with the passfile written at stamp (the
// server's time; "" when it was written at the pod's start, before the server, so every
// connection used it), and waits up to streamWait for it to stream. A receiver that started
// before the stamp is ended once; the startup process starts a new one at once. No
// session ends and no configuration changes; replication pauses for the reconnect.
func (p *repointer) reconnect(ctx context.Context, stamp string) error {
	deadline := time.Now().Add(p.wait)
	signalled := 0
	for {
		st, err := p.receiver(ctx, stamp)
		if err != nil {
			return fmt.Errorf("asking the server about its WAL receiver: %v", err)
		}
		fresh := stamp == "" || st.startedSince
		switch {
		case st.pid != 0 && fresh && st.streaming:
			return nil
		case st.pid != 0 && !fresh && st.pid != signalled:
			if err := p.signal(st.pid); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("ending the WAL receiver %d: %v", st.pid, err)
			}
			signalled = st.pid
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the standby does not stream on a connection made with it yet (WAL receiver %d, streaming %t)", st.pid, st.streaming)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(receiverPoll):
		}
	}
}

// writeRepointedPassfile makes the passfile hold line, stamped with the server's time now.
// A passfile already holding line is left alone. It returns the stamp in effect: now, the
// earlier one, or "" for a passfile written at the pod's start.
func writeRepointedPassfile(path, line, now string) (written bool, stamp string, err error) {
	if old, err := os.ReadFile(path); err == nil {
		for _, l := range strings.Split(string(old), "\n") {
			if s, ok := strings.CutPrefix(l, PassfileStamp); ok {
				stamp = s
				continue
			}
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if l == line {
				return false, stamp, nil
			}
			break // libpq uses the first matching line; every pgops line matches everything
		}
	} else if !os.IsNotExist(err) {
		return false, "", err
	}
	// A side file of an earlier release's re-point (written by the server) is stale.
	if err := os.Remove(path + ".pgops"); err != nil && !os.IsNotExist(err) {
		return false, "", err
	}
	return true, now, writeFileAtomic(path, []byte(PassfileStamp+now+"\n"+line+"\n"))
}

// redact keeps a secret out of an error's text.
func redact(err error, secret string) string {
	return strings.ReplaceAll(err.Error(), secret, "[redacted]")
}

// RepointStandby asks the agent at baseURL (http://<pod address>:<agent port>) to give its
// running standby user/password for its connection to the primary, and answers once the
// standby streams on a connection made with it; it tells whether the passfile changed. The
// agent accepts only the credential the standby's own server holds (it has replayed the
// change from the primary).
func RepointStandby(ctx context.Context, client *http.Client, baseURL, user, password string) (bool, error) {
	body, err := json.Marshal(PassfileRequest{Username: user, Password: password})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimSuffix(baseURL, "/")+StandbyPassfilePath, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking the pgops agent at %s: %s", baseURL, redact(err, password))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxRequestBytes))
	if resp.StatusCode != http.StatusOK {
		return false, &AgentError{Status: resp.StatusCode, Message: strings.TrimSpace(redact(errors.New(string(msg)), password))}
	}
	var out PassfileResponse
	if err := json.Unmarshal(msg, &out); err != nil {
		return false, fmt.Errorf("the pgops agent at %s answered %q", baseURL, msg)
	}
	return out.Written, nil
}

// AgentError is a refusal by the agent, with its reason.
type AgentError struct {
	Status  int
	Message string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("the pgops agent refused (HTTP %d): %s", e.Status, e.Message)
}

// Retryable tells whether asking again shortly may succeed: the standby's server does not
// hold the credential yet (it has not replayed the change), or does not stream on it yet.
func (e *AgentError) Retryable() bool {
	return e.Status == http.StatusForbidden || e.Status == http.StatusServiceUnavailable
}
