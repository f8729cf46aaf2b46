package opsmanager

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/pgops/pgops/pkg/agent"
	"github.com/pgops/pgops/pkg/credential"
)

// Database is what a rotation needs from PostgreSQL and the pods' agents. Production code
// uses PostgreSQL (pkg/credential, pkg/agent); unit tests of the state machine use an in-memory stand-in.
type Database interface {
	// EnsurePassword sets role's password unless its stored verifier already matches,
	// logging in once with target's credential; it tells whether it set it.
	EnsurePassword(ctx context.Context, target credential.Target, role, password string) (bool, error)
	// PasswordMatches tells whether password is role's password as pg_authid stores it,
	// logging in with target's credential: unlike a login, no trust rule in pg_hba.conf
	// can answer it.
	PasswordMatches(ctx context.Context, target credential.Target, role, password string) (bool, error)
	// VerifyLogin tells whether user/password authenticates; false, nil on rejection.
	VerifyLogin(ctx context.Context, target credential.Target, user, password string) (bool, error)
	// StreamingStandbyNames lists the application names (pod names) of the standbys
	// streaming from the primary behind target.
	StreamingStandbyNames(ctx context.Context, target credential.Target) ([]string, error)
	// WakeStandby makes the standby behind target, if it runs no WAL receiver, try its
	// primary at once rather than at its next retry; it tells whether it did.
	WakeStandby(ctx context.Context, target credential.Target) (bool, error)
	// RepointStandby asks the pgops agent of the running standby behind target, at
	// agentPort, to give it user/password for its connection to the primary; it answers
	// once the standby streams on a connection made with them, and tells whether the
	// passfile changed.
	RepointStandby(ctx context.Context, target credential.Target, agentPort int, user, password string) (bool, error)
}

// PostgreSQL is the production Database.
type PostgreSQL struct{}

var _ Database = PostgreSQL{}

func (PostgreSQL) EnsurePassword(ctx context.Context, t credential.Target, role, password string) (bool, error) {
	return credential.EnsurePassword(ctx, t, role, password)
}

func (PostgreSQL) PasswordMatches(ctx context.Context, t credential.Target, role, password string) (bool, error) {
	return credential.PasswordMatches(ctx, t, role, password)
}

func (PostgreSQL) VerifyLogin(ctx context.Context, t credential.Target, user, password string) (bool, error) {
	return credential.VerifyLogin(ctx, t, user, password)
}

func (PostgreSQL) StreamingStandbyNames(ctx context.Context, t credential.Target) ([]string, error) {
	return credential.StreamingStandbyNames(ctx, t)
}

func (PostgreSQL) WakeStandby(ctx context.Context, t credential.Target) (bool, error) {
	return credential.WakeStandby(ctx, t)
}

// agentClient calls the pods' agents; each call is bounded by its context too.
var agentClient = &http.Client{Timeout: 10 * time.Second}

func (PostgreSQL) RepointStandby(ctx context.Context, t credential.Target, agentPort int, user, password string) (bool, error) {
	return agent.RepointStandby(ctx, agentClient, "http://"+net.JoinHostPort(t.Host, strconv.Itoa(agentPort)), user, password)
}
