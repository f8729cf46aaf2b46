package opsmanager

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// Database is what a rotation needs from PostgreSQL. Production code uses PostgreSQL
// (pkg/credential); unit tests of the state machine use an in-memory stand-in.
type Database interface {
	// PasswordMatches tells whether role's stored verifier matches password, logging in
	// with target's credential.
	PasswordMatches(ctx context.Context, target credential.Target, role, password string) (bool, error)
	// SetPassword sets role's password, logging in with target's credential.
	SetPassword(ctx context.Context, target credential.Target, role, password string) error
	// VerifyLogin tells whether user/password authenticates; false, nil on rejection.
	VerifyLogin(ctx context.Context, target credential.Target, user, password string) (bool, error)
	// StreamingStandbys counts the standbys streaming from the primary behind target.
	StreamingStandbys(ctx context.Context, target credential.Target) (int, error)
}

// PostgreSQL is the production Database.
type PostgreSQL struct{}

var _ Database = PostgreSQL{}

func (PostgreSQL) PasswordMatches(ctx context.Context, t credential.Target, role, password string) (bool, error) {
	return credential.PasswordMatches(ctx, t, role, password)
}

func (PostgreSQL) SetPassword(ctx context.Context, t credential.Target, role, password string) error {
	return credential.SetPassword(ctx, t, role, password)
}

func (PostgreSQL) VerifyLogin(ctx context.Context, t credential.Target, user, password string) (bool, error) {
	return credential.VerifyLogin(ctx, t, user, password)
}

func (PostgreSQL) StreamingStandbys(ctx context.Context, t credential.Target) (int, error) {
	return credential.StreamingStandbys(ctx, t)
}

// HostMode says how the operator reaches a database's primary Service.
type HostMode string

const (
	// HostModeClusterIP connects to the Service's ClusterIP: works wherever the operator
	// can route to ClusterIPs, in the cluster or on a node.
	HostModeClusterIP HostMode = "ClusterIP"
	// HostModeDNS connects to <service>.<namespace>.svc: needs cluster DNS.
	HostModeDNS HostMode = "DNS"
)

// ParseHostMode validates the --database-host-mode flag.
func ParseHostMode(s string) (HostMode, error) {
	switch HostMode(s) {
	case HostModeClusterIP, HostModeDNS:
		return HostMode(s), nil
	}
	return "", fmt.Errorf("--database-host-mode must be ClusterIP or DNS, got %q", s)
}

// primaryHost is the address of a database's primary Service.
func (m HostMode) primaryHost(svc *corev1.Service) (string, error) {
	if m == HostModeDNS {
		return svc.Name + "." + svc.Namespace + ".svc", nil
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no ClusterIP yet", svc.Namespace, svc.Name)
	}
	return svc.Spec.ClusterIP, nil
}

// servicePort is the Service's PostgreSQL port: the one named "primary" or "postgres" if
// present, else the first, else 5432.
func servicePort(svc *corev1.Service) int {
	for _, p := range svc.Spec.Ports {
		if p.Name == "primary" || p.Name == "postgres" {
			return int(p.Port)
		}
	}
	if len(svc.Spec.Ports) > 0 {
		return int(svc.Spec.Ports[0].Port)
	}
	return kubedbv1.PostgresPort
}
