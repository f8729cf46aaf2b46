package opsmanager

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// replicationPollInterval is how often RestartNodes looks at pg_stat_replication while
// standbys reconnect: no informer reports replication.
const replicationPollInterval = time.Second

// restartNodes restarts the database's pods one at a time, standbys first (highest
// ordinal first) and the primary last, so that each comes up with the credential from its
// new environment. A pod counts as restarted when it runs the StatefulSet's update
// revision (it was recreated from the new template, so it has a new UID) and is Ready.
// The step ends when every standby streams from the primary again.
func (c *Controller) restartNodes(ctx context.Context, r *rotation) (outcome, error) {
	sts, err := c.statefulSets.StatefulSets(r.pg.Namespace).Get(r.pg.Name)
	if err != nil {
		return outcome{}, fmt.Errorf("reading StatefulSet %s: %w", r.pg.Name, err)
	}
	if !revisionObserved(sts) {
		return waiting("waiting for the StatefulSet controller to observe StatefulSet %s", sts.Name), nil
	}
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	for ordinal := replicas - 1; ordinal >= 0; ordinal-- {
		name := fmt.Sprintf("%s-%d", sts.Name, ordinal)
		pod, err := c.pods.Pods(sts.Namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return waiting("waiting for pod %s to be recreated", name), nil
		}
		if err != nil {
			return outcome{}, err
		}
		if pod.Labels[appsv1.ControllerRevisionHashLabelKey] != sts.Status.UpdateRevision {
			return c.evictPod(ctx, r, pod)
		}
		if pod.DeletionTimestamp != nil || !podReady(pod) {
			return waiting("waiting for the restarted pod %s to be ready", name), nil
		}
		setCondition(&r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, name), metav1.ConditionTrue,
			ReasonCompleted, fmt.Sprintf("pod %s restarted and ready", name), r.req.Generation, r.now)
	}

	if standbys := int(replicas) - 1; standbys > 0 {
		streaming, err := c.streamingStandbys(ctx, r)
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
		"every pod restarted and ready", r.req.Generation, r.now)
	return completed("restarted %d pod(s); standbys stream again", replicas), nil
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

// streamingStandbys asks the primary how many standbys stream from it.
func (c *Controller) streamingStandbys(ctx context.Context, r *rotation) (int, error) {
	current, _, err := c.currentCredential(ctx, r.pg)
	if err != nil {
		return 0, err
	}
	target, err := c.primaryTarget(r.pg)
	if err != nil {
		return 0, err
	}
	target.User, target.Password = current.username, current.password
	n, err := c.db.StreamingStandbys(ctx, target)
	if err != nil {
		return 0, fmt.Errorf("checking replication on Postgres %s: %w", r.pg.Name, err)
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
