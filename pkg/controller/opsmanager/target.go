package opsmanager

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
	"github.com/pgops/pgops/pkg/podstatus"
)

// primaryTarget says how to reach the planned database's primary; the caller fills in who.
// The primary Service must be controlled by the planned Postgres: a Service of another
// database whose derived name collides (a database "x" has the governing Service "x-pods",
// the very name of the primary Service of a database "x-pods") is never used.
func (c *Controller) primaryTarget(req *opsv1alpha1.PostgresOpsRequest) (credential.Target, error) {
	name := req.Spec.DatabaseRef.Name
	svc, err := c.services.Services(req.Namespace).Get(name)
	if err != nil {
		return credential.Target{}, fmt.Errorf("finding the primary Service of Postgres %s: %w", name, err)
	}
	if err := checkOwnedByPlan(svc, req); err != nil {
		return credential.Target{}, fmt.Errorf("primary Service: %w", err)
	}
	return c.target(dbaddr.PrimaryTarget(c.cfg.HostMode, svc))
}

// podTarget says how to reach the PostgreSQL of the planned database's pod name, from the
// cache: the pod must be controlled by the planned StatefulSet, running and Ready.
func (c *Controller) podTarget(req *opsv1alpha1.PostgresOpsRequest, sts *appsv1.StatefulSet, name string) (credential.Target, error) {
	pod, err := c.pods.Pods(req.Namespace).Get(name)
	if err != nil {
		return credential.Target{}, fmt.Errorf("reading pod %s: %w", name, err)
	}
	if owner := metav1.GetControllerOf(pod); owner == nil || owner.UID != sts.UID {
		return credential.Target{}, fmt.Errorf("pod %s is not controlled by StatefulSet %s", name, sts.Name)
	}
	if pod.DeletionTimestamp != nil || !podstatus.Ready(pod) {
		return credential.Target{}, fmt.Errorf("pod %s is not ready", name)
	}
	return c.target(dbaddr.PodTarget(c.cfg.HostMode, pod))
}

// target is how the ops-manager connects to host:port.
func (c *Controller) target(host string, port int, err error) (credential.Target, error) {
	if err != nil {
		return credential.Target{}, err
	}
	return credential.Target{
		Host: host, Port: port, SSLMode: c.cfg.SSLMode,
		ConnectTimeout: c.cfg.ConnectTimeout, ApplicationName: ControllerName,
	}, nil
}
