// Package dbaddr says how the pgops operators reach a database's primary Service: the
// --database-host-mode flag both operators take, and the host and port it gives.
package dbaddr

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// Mode says how an operator reaches a database's primary Service.
type Mode string

const (
	// ModeClusterIP connects to the Service's ClusterIP: works wherever the operator can
	// route to ClusterIPs, in the cluster, on a node or next to a local cluster.
	ModeClusterIP Mode = "ClusterIP"
	// ModeDNS connects to "<service>.<namespace>.svc": needs cluster DNS.
	ModeDNS Mode = "DNS"
)

// FlagUsage describes the --database-host-mode flag.
const FlagUsage = "How to reach a database's primary Service: ClusterIP (its cluster IP; works in the cluster, on nodes and next to a local cluster) or DNS (<service>.<namespace>.svc; needs cluster DNS)."

// ParseMode validates a --database-host-mode value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeClusterIP, ModeDNS:
		return Mode(s), nil
	}
	return "", fmt.Errorf("database host mode must be %s or %s, got %q", ModeClusterIP, ModeDNS, s)
}

// PrimaryTarget is the host and port at which mode reaches the primary Service svc. In
// ClusterIP mode (and for an empty mode) a Service without a ClusterIP yet, or a headless
// one, is an error.
func PrimaryTarget(mode Mode, svc *corev1.Service) (host string, port int, err error) {
	if mode == ModeDNS {
		host = svc.Name + "." + svc.Namespace + ".svc"
	} else {
		host = svc.Spec.ClusterIP
		if host == "" || host == corev1.ClusterIPNone {
			return "", 0, fmt.Errorf("service %s/%s has no ClusterIP yet", svc.Namespace, svc.Name)
		}
	}
	return host, ServicePort(svc), nil
}

// ServicePort is svc's PostgreSQL port: the port named "primary" (the primary Service's
// alias) or "postgres" if there is one, else the first, else 5432.
func ServicePort(svc *corev1.Service) int {
	for _, p := range svc.Spec.Ports {
		if p.Name == string(kubedbv1.PrimaryServiceAlias) || p.Name == "postgres" {
			return int(p.Port)
		}
	}
	if len(svc.Spec.Ports) > 0 {
		return int(svc.Spec.Ports[0].Port)
	}
	return kubedbv1.PostgresPort
}

// PodTarget is the host and port at which mode reaches the PostgreSQL of one pod: its pod
// IP (ClusterIP mode, and an empty mode), or its name under the StatefulSet's governing
// Service, "<hostname>.<subdomain>.<namespace>.svc" (DNS mode). The port is the container
// port named "db", else 5432.
func PodTarget(mode Mode, pod *corev1.Pod) (host string, port int, err error) {
	if mode == ModeDNS {
		if pod.Spec.Hostname == "" || pod.Spec.Subdomain == "" {
			return "", 0, fmt.Errorf("pod %s/%s has no hostname under a governing Service", pod.Namespace, pod.Name)
		}
		host = pod.Spec.Hostname + "." + pod.Spec.Subdomain + "." + pod.Namespace + ".svc"
	} else {
		host = pod.Status.PodIP
		if host == "" {
			return "", 0, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
		}
	}
	port = kubedbv1.PostgresPort
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "db" {
				port = int(p.ContainerPort)
			}
		}
	}
	return host, port, nil
}
