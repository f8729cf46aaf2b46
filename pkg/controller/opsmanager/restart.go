package opsmanager

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// replicationPollInterval is how often RestartNodes looks at pg_stat_replication while
// standbys reconnect: no informer reports replication.
const replicationPollInterval = time.Second

// restartNodes restarts the plan's pods one at a time, in the plan's order (standbys from
// the highest ordinal, then the primary unless its storage is Ephemeral), so that each comes
// up with the credential from its new environment. A pod counts as restarted when it runs
// the StatefulSet's update revision (it was recreated from the new template) and is Ready.
// The step ends when every standby streams from the primary again.
func (c *Controller) restartNodes(ctx context.Context, r *rotation) (outcome, error) {
	plan := r.req.Status.RotateAuth
	sts, err := c.plannedStatefulSet(r.req)
	if err != nil {
		return outcome{}, err
	}
	if !revisionObserved(sts) {
		return waiting("waiting for the StatefulSet controller to observe StatefulSet %s", sts.Name), nil
	}
	for _, name := range plan.RestartPods {
		out, done, err := c.restartPod(ctx, r, sts, name)
		if !done || err != nil {
			return out, err
		}
		setCondition(&r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, name), metav1.ConditionTrue,
			ReasonCompleted, fmt.Sprintf("pod %s restarted and ready", name), r.req.Generation, r.now)
	}

	if standbys := len(plan.RestartPods) + len(plan.KeptPods) - 1; standbys > 0 {
		streaming, err := c.streamingStandbys(ctx, r.req)
		if err != nil {
			return outcome{}, err
		}
		if streaming < standbys {
			out := waiting("waiting for standbys to stream from the primary (%d of %d streaming)", streaming, standbys)
			out.recheckAfter = replicationPollInterval
			return out, nil
		}
	}
	setCondition(&r.req.Status.Conditions, ConditionCheckPodReady, metav1.ConditionTrue, ReasonCompleted,
		"every restarted pod is ready", r.req.Generation, r.now)
	return completed("%s; standbys stream again", restartSummary(plan)), nil
}

// restartSummary says what was and was not restarted, and why.
func restartSummary(plan *opsv1alpha1.RotateAuthPlan) string {
	msg := fmt.Sprintf("restarted %s", strings.Join(plan.RestartPods, ", "))
	if len(plan.RestartPods) == 0 {
		msg = "restarted no pod"
	}
	if len(plan.KeptPods) > 0 {
		msg += fmt.Sprintf("; kept %s running: storage is Ephemeral, so a restart would erase its data, "+
			"and the primary does not need one (the new password is set over SQL; pods read it only at initdb)",
			strings.Join(plan.KeptPods, ", "))
	}
	return msg
}

// restartPod moves one pod towards running the update revision and being Ready: done when
// it is; otherwise out says what it waits for.
func (c *Controller) restartPod(ctx context.Context, r *rotation, sts *appsv1.StatefulSet, name string) (out outcome, done bool, err error) {
	pod, err := c.pods.Pods(sts.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return waiting("waiting for pod %s to be recreated", name), false, nil
	}
	if err != nil {
		return outcome{}, false, err
	}
	if owner := metav1.GetControllerOf(pod); owner == nil || owner.UID != sts.UID {
		return outcome{}, false, fmt.Errorf("pod %s is not controlled by StatefulSet %s", name, sts.Name)
	}
	if pod.Labels[appsv1.ControllerRevisionHashLabelKey] != sts.Status.UpdateRevision {
		out, err := c.evictPod(ctx, r, pod)
		return out, false, err
	}
	if pod.DeletionTimestamp != nil || !podReady(pod) {
		return waiting("waiting for the restarted pod %s to be ready", name), false, nil
	}
	return outcome{}, true, nil
}

// plannedStatefulSet is the database's StatefulSet from the cache, checked to belong to the
// planned database.
func (c *Controller) plannedStatefulSet(req *opsv1alpha1.PostgresOpsRequest) (*appsv1.StatefulSet, error) {
	sts, err := c.statefulSets.StatefulSets(req.Namespace).Get(req.Spec.DatabaseRef.Name)
	if err != nil {
		return nil, fmt.Errorf("reading StatefulSet %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	if err := checkOwnedByPlan(sts, req); err != nil {
		return nil, err
	}
	return sts, nil
}

// evictPod asks for pod to be evicted (honouring PodDisruptionBudgets) unless it is
// already going away.
func (c *Controller) evictPod(ctx context.Context, r *rotation, pod *corev1.Pod) (outcome, error) {
	if pod.DeletionTimestamp != nil {
		return waiting("waiting for pod %s to terminate", pod.Name), nil
	}
	err := c.kubeClient.CoreV1().Pods(pod.Namespace).EvictV1(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	})
	switch {
	case apierrors.IsTooManyRequests(err):
		return waiting("a PodDisruptionBudget does not allow evicting pod %s yet", pod.Name), nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Already gone, or replaced since the cache saw it.
		return waiting("waiting for pod %s to be recreated", pod.Name), nil
	case err != nil:
		return outcome{}, fmt.Errorf("evicting pod %s: %w", pod.Name, err)
	}
	msg := fmt.Sprintf("evicted pod %s (uid %s)", pod.Name, pod.UID)
	setCondition(&r.req.Status.Conditions, perPodCondition(ConditionEvictPod, pod.Name), metav1.ConditionTrue,
		ReasonCompleted, msg, r.req.Generation, r.now)
	if meta.FindStatusCondition(r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod.Name)) == nil {
		setCondition(&r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod.Name), metav1.ConditionFalse,
			ReasonInProgress, fmt.Sprintf("waiting for pod %s to come back ready", pod.Name), r.req.Generation, r.now)
	}
	c.recorder.Event(r.req, corev1.EventTypeNormal, ConditionEvictPod, msg)
	return waiting("restarting pod %s", pod.Name), nil
}

// streamingStandbys asks the primary how many standbys stream from it, logging in with the
// plan's target credential (PostgreSQL has it from UpdateCredential on).
func (c *Controller) streamingStandbys(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (int, error) {
	auth, _, err := c.readCredential(ctx, req.Namespace, req.Status.RotateAuth.TargetSecret)
	if err != nil {
		return 0, err
	}
	target, err := c.primaryTarget(req)
	if err != nil {
		return 0, err
	}
	target.User, target.Password = auth.username, auth.password
	n, err := c.db.StreamingStandbys(ctx, target)
	if err != nil {
		return 0, fmt.Errorf("checking replication on Postgres %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	return n, nil
}

func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
