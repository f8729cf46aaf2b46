package provisioner

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pgops/pgops/pkg/credential"
)

// HostMode says how the provisioner reaches a database's primary Service.
type HostMode string

const (
	// HostModeClusterIP connects to the primary Service's ClusterIP: works wherever the
	// operator can route to ClusterIPs, including out of cluster on a node or local cluster.
	HostModeClusterIP HostMode = "ClusterIP"
	// HostModeDNS connects to "<service>.<namespace>.svc": needs cluster DNS.
	HostModeDNS HostMode = "DNS"
)

// ParseHostMode validates the --database-host-mode flag.
func ParseHostMode(s string) (HostMode, error) {
	switch HostMode(s) {
	case HostModeClusterIP, HostModeDNS:
		return HostMode(s), nil
	}
	return "", fmt.Errorf("database host mode must be %s or %s, got %q", HostModeClusterIP, HostModeDNS, s)
}

// DefaultHealthCheckTimeout bounds one SQL health check.
const DefaultHealthCheckTimeout = 5 * time.Second

// PrimaryEndpoint is what a HealthChecker gets to check a database's primary.
type PrimaryEndpoint struct {
	// Service is the primary Service, "<name>" in the database's namespace.
	Service *corev1.Service
	// User and Password are the credential from the auth Secret.
	User     string
	Password string
}

// HealthChecker checks whether a database's primary accepts connections. It returns nil when a
// login with the credential succeeds, else an error that says why (without the password).
type HealthChecker interface {
	CheckPrimary(ctx context.Context, ep PrimaryEndpoint) error
}

// SQLHealthChecker logs in through pkg/credential.
type SQLHealthChecker struct {
	HostMode HostMode
	Timeout  time.Duration
}

// CheckPrimary implements HealthChecker.
func (h *SQLHealthChecker) CheckPrimary(ctx context.Context, ep PrimaryEndpoint) error {
	svc := ep.Service
	var host string
	switch h.HostMode {
	case HostModeDNS:
		host = svc.Name + "." + svc.Namespace + ".svc"
	default:
		host = svc.Spec.ClusterIP
		if host == "" || host == corev1.ClusterIPNone {
			return fmt.Errorf("service %s/%s has no ClusterIP yet", svc.Namespace, svc.Name)
		}
	}
	port := PostgresPort
	for _, p := range svc.Spec.Ports {
		if p.Name == string(RolePrimary) || len(svc.Spec.Ports) == 1 {
			port = int(p.Port)
			break
		}
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHealthCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := credential.Target{
		Host:             host,
		Port:             port,
		Database:         "postgres",
		ConnectTimeout:   timeout,
		StatementTimeout: timeout,
		ApplicationName:  FieldManager,
	}
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
		return fmt.Errorf("primary %s:%d rejected the credential of user %q from the auth secret", host, port, ep.User)
	}
	return nil
}
