package provisioner

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
)

// DefaultHealthCheckTimeout bounds one SQL health check.
const DefaultHealthCheckTimeout = 5 * time.Second

// PrimaryEndpoint is what a HealthChecker gets to check a database's primary.
type PrimaryEndpoint struct {
	// Service is the primary Service, "<name>" in the database's namespace.
	Service *corev1.Service
	// User and Password are the credential from the auth Secret.
	User     string
	Password string
	// Standbys are the pod names of the standbys that should stream from the primary.
	Standbys []string
	// Synchronous are the synchronous replication settings the primary should have (the
	// zero value: asynchronous); nil leaves the primary's as they are.
	Synchronous *credential.SynchronousSettings
}

// ReplicationReport is what the primary says of its standbys.
type ReplicationReport struct {
	// Standbys are those that stream, with their sync_state.
	Standbys []credential.Standby
	// SettingsChanged says the synchronous settings were just applied: sync_state may not
	// show them for a moment.
	SettingsChanged bool
}

// HealthChecker checks whether a database's primary accepts connections. It returns nil when a
// login with the credential succeeds, else an error that says why (without the password).
type HealthChecker interface {
	CheckPrimary(ctx context.Context, ep PrimaryEndpoint) error
	// Replication brings the primary's synchronous replication settings to
	// ep.Synchronous and reports the standbys that stream from it (pg_stat_replication),
	// logging in with ep's credential.
	Replication(ctx context.Context, ep PrimaryEndpoint) (ReplicationReport, error)
}

// SQLHealthChecker logs in through pkg/credential, at the primary Service's address in
// HostMode (the zero value is ClusterIP).
type SQLHealthChecker struct {
	HostMode dbaddr.Mode
	Timeout  time.Duration
}

// target is where and how to log in to ep's primary.
func (h *SQLHealthChecker) target(ep PrimaryEndpoint) (credential.Target, time.Duration, error) {
	host, port, err := dbaddr.PrimaryTarget(h.HostMode, ep.Service)
	if err != nil {
		return credential.Target{}, 0, err
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHealthCheckTimeout
	}
	return credential.Target{
		Host:             host,
		Port:             port,
		Database:         "postgres",
		ConnectTimeout:   timeout,
		StatementTimeout: timeout,
		ApplicationName:  FieldManager,
	}, timeout, nil
}

// Replication implements HealthChecker.
func (h *SQLHealthChecker) Replication(ctx context.Context, ep PrimaryEndpoint) (ReplicationReport, error) {
	target, timeout, err := h.target(ep)
	if err != nil {
		return ReplicationReport{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target.User, target.Password = ep.User, ep.Password
	standbys, changed, err := credential.EnsureReplication(ctx, target, ep.Synchronous)
	return ReplicationReport{Standbys: standbys, SettingsChanged: changed}, err
}

// CheckPrimary implements HealthChecker.
func (h *SQLHealthChecker) CheckPrimary(ctx context.Context, ep PrimaryEndpoint) error {
	target, timeout, err := h.target(ep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, port := target.Host, target.Port
	ok, err := credential.VerifyLogin(ctx, target, ep.User, ep.Password)
	if err != nil {
		switch credential.Classify(err) {
		case credential.ClassUnreachable:
			return fmt.Errorf("primary %s:%d unreachable: %w", host, port, err)
		default:
			return fmt.Errorf("checking primary %s:%d: %w", host, port, err)
		}
	}
	if !ok {
		// Wrapped so that callers can tell a refused credential from a primary that is down.
		return fmt.Errorf("primary %s:%d rejected the credential of user %q from the auth secret (%w)", host, port, ep.User, credential.ErrAuthFailed)
	}
	return nil
}
