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

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/podstatus"
)

// replicationPollInterval is how often RestartNodes looks at pg_stat_replication while
// standbys reconnect: no informer reports replication. The restarted primary's Ready event
// wakes the first look, which wakes the standbys that do not stream (wake.go); left alone,
// they retry every wal_retrieve_retry_interval (1 s, set by the entrypoint). A look costs
// one login.
const replicationPollInterval = 200 * time.Millisecond

// restartNodes brings every pod the plan names onto the new credential, one at a time, in
// the plan's order: RestartPods are restarted (standbys from the highest ordinal, then the
// primary in mode AllPods unless its storage is Ephemeral), so that each comes up with the
// credential from its new environment; RepointPods, running standbys, are given it without
// a restart, all at once (repoint.go). A pod counts as restarted when it runs the StatefulSet's update
// revision (it was recreated from the new template) and is Ready. The step ends when every
// standby streams from the primary again and the primary refuses the old credential.
func (c *Controller) restartNodes(ctx context.Context, r *rotation) (outcome, error) {
	plan := r.req.Status.RotateAuth
	sts, err := c.plannedStatefulSet(r.req)
	if err != nil {
		return outcome{}, err
	}
	if len(plan.RestartPods) > 0 && !revisionObserved(sts) {
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
	auth, prev, err := c.targetCredential(ctx, r.req)
	if err != nil {
		return outcome{}, err
	}
	if out, done, err := c.repointStandbys(ctx, r, sts, auth, plan.RepointPods); !done || err != nil {
		return out, err
	}

	if standbys := plannedStandbys(r.req); len(standbys) > 0 {
		streaming, err := c.streamingStandbys(ctx, r.req, auth)
		if err != nil {
			return outcome{}, err
		}
		if missing := notStreaming(standbys, streaming); len(missing) > 0 {
			out := waiting("waiting for standbys to stream from the primary (%d of %d streaming)", len(standbys)-len(missing), len(standbys))
			out.recheckAfter = replicationPollInterval
			if c.wakeStandbys(ctx, r, sts, auth, missing) {
				out.recheckAfter = wokenPollInterval
			}
			return out, nil
		}
	}
	refusal, err := c.checkOldCredentialRefused(ctx, r.req, prev, auth)
	if err != nil {
		return outcome{}, err
	}
	if len(plan.RestartPods) > 0 {
		setCondition(&r.req.Status.Conditions, ConditionCheckPodReady, metav1.ConditionTrue, ReasonCompleted,
			"every restarted pod is ready", r.req.Generation, r.now)
	}
	return completed("%s; standbys stream again%s", restartSummary(plan), refusal), nil
}

// targetCredential reads the credential the rotation gave PostgreSQL, from the credential
// record (a target Secret that another actor changed back since says nothing about it), and
// the previous one, which the staged Secret (or else the target Secret) records; prev is nil
// when none is recorded, or it is the same.
func (c *Controller) targetCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (basicAuth, *basicAuth, error) {
	plan := req.Status.RotateAuth
	auth, _, err := c.acceptedCredential(ctx, req, plan.DatabaseUID, plan.TargetSecret)
	if err != nil {
		return basicAuth{}, nil, err
	}
	var recorded *corev1.Secret
	if staged, err := c.getStaged(ctx, req); err == nil && staged != nil {
		recorded = staged
	} else if _, target, err := c.readCredential(ctx, req.Namespace, plan.TargetSecret); err == nil {
		recorded = target
	}
	if recorded == nil {
		return auth, nil, nil
	}
	prev := basicAuth{
		username: string(recorded.Data[kubedbv1.AuthPrevUsernameKey]),
		password: string(recorded.Data[kubedbv1.AuthPrevPasswordKey]),
	}
	if prev.username == "" || prev.password == "" || prev == auth {
		return auth, nil, nil
	}
	return auth, &prev, nil
}

// checkOldCredentialRefused makes sure PostgreSQL no longer has the password the rotation
// replaced, by its stored verifier (pg_authid): a rotation whose old password is still the
// role's has not rotated anything. A login is no proof either way, since a trust rule in
// pg_hba.conf accepts any password: when the old password still logs in although it is not
// the role's any more, the returned note says that its refusal cannot be checked.
func (c *Controller) checkOldCredentialRefused(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, prev *basicAuth, auth basicAuth) (string, error) {
	if prev == nil || prev.password == auth.password {
		return "", nil
	}
	target, err := c.primaryTarget(req)
	if err != nil {
		return "", err
	}
	asNew := target
	asNew.User, asNew.Password = auth.username, auth.password
	stored, err := c.db.PasswordMatches(ctx, asNew, prev.username, prev.password)
	if err != nil {
		return "", fmt.Errorf("checking that PostgreSQL no longer has the old password: %w", err)
	}
	if stored {
		return "", fatal(ReasonOldCredentialAccepted, "PostgreSQL still has the old password of %s", prev.username)
	}
	ok, err := c.db.VerifyLogin(ctx, target, prev.username, prev.password)
	if err != nil {
		return "", fmt.Errorf("checking that the old credential is refused: %w", err)
	}
	if ok {
		return "; the old password still logs in although PostgreSQL no longer has it: a trust or password-less rule in pg_hba.conf answers " +
			"logins, so whether the old one is refused cannot be checked", nil
	}
	return "; the old credential is refused", nil
}

// restartSummary says what was and was not restarted, and why.
func restartSummary(plan *opsv1alpha1.RotateAuthPlan) string {
	parts := []string{"restarted no pod"}
	if len(plan.RestartPods) > 0 {
		parts[0] = "restarted " + strings.Join(plan.RestartPods, ", ")
	}
	if len(plan.RepointPods) > 0 {
		parts = append(parts, "gave the running standbys "+strings.Join(plan.RepointPods, ", ")+" the new credential without a restart")
	}
	if len(plan.KeptPods) > 0 {
		why := "the primary does not need a restart"
		if planRestartMode(plan) == opsv1alpha1.RestartAllPods {
			why = "storage is Ephemeral, so a restart would erase its data, and the primary does not need one"
		}
		parts = append(parts, fmt.Sprintf("kept %s running: %s (the new password is set over SQL; pods read it only at initdb)",
			strings.Join(plan.KeptPods, ", "), why))
	}
	parts = append(parts, plan.Notes...)
	return fmt.Sprintf("restart mode %s: %s", planRestartMode(plan), strings.Join(parts, "; "))
}

// planRestartMode is the plan's restart mode; plans recorded before modes existed restart
// all pods.
func planRestartMode(plan *opsv1alpha1.RotateAuthPlan) opsv1alpha1.RestartMode {
	if plan.RestartMode == "" {
		return opsv1alpha1.RestartAllPods
	}
	return plan.RestartMode
}

// restartPod moves one pod towards running the update revision and being Ready: done when
// it is; otherwise out says what it waits for.
func (c *Controller) restartPod(ctx context.Context, r *rotation, sts *appsv1.StatefulSet, name string) (out outcome, done bool, err error) {
	pod, err := c.pods.Pods(sts.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return restarting(name), false, nil
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
	if pod.DeletionTimestamp != nil || !podstatus.Ready(pod) {
		return restarting(name), false, nil
	}
	return outcome{}, true, nil
}

// restarting is what RestartNodes says from a pod's eviction until it is back and Ready:
// one message for the whole restart, so its stages (terminating, recreated, starting) cost
// no status writes.
func restarting(pod string) outcome {
	return waiting("restarting pod %s: waiting for it to come back ready", pod)
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

// evictionRecheck is how soon an eviction a PodDisruptionBudget refused is asked again.
const evictionRecheck = 2 * time.Second

// evictPod asks for pod to be evicted (honouring PodDisruptionBudgets) unless it is
// already going away.
func (c *Controller) evictPod(ctx context.Context, r *rotation, pod *corev1.Pod) (outcome, error) {
	if pod.DeletionTimestamp != nil || evicted(r.req, pod) {
		// Going away: an eviction the API server accepted deletes the pod, even while the
		// cache, behind that write, still shows it running.
		return restarting(pod.Name), nil
	}
	err := c.kubeClient.CoreV1().Pods(pod.Namespace).EvictV1(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	})
	switch {
	case apierrors.IsTooManyRequests(err):
		// No informer here reports the budget's change (the disruption controller's
		// status write after a restarted pod turns Ready): look again shortly.
		out := waiting("a PodDisruptionBudget does not allow evicting pod %s yet", pod.Name)
		out.recheckAfter = evictionRecheck
		return out, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Already gone, or replaced since the cache saw it.
		return restarting(pod.Name), nil
	case err != nil:
		return outcome{}, fmt.Errorf("evicting pod %s: %w", pod.Name, err)
	}
	msg := evictedMessage(pod)
	setCondition(&r.req.Status.Conditions, perPodCondition(ConditionEvictPod, pod.Name), metav1.ConditionTrue,
		ReasonCompleted, msg, r.req.Generation, r.now)
	if meta.FindStatusCondition(r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod.Name)) == nil {
		setCondition(&r.req.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod.Name), metav1.ConditionFalse,
			ReasonInProgress, fmt.Sprintf("waiting for pod %s to come back ready", pod.Name), r.req.Generation, r.now)
	}
	c.recorder.Event(r.req, corev1.EventTypeNormal, ConditionEvictPod, msg)
	return restarting(pod.Name), nil
}

// evictedMessage is the EvictPod condition's message once pod is evicted: it names the
// pod's UID, so that the eviction of this very pod is recorded in the request's status.
func evictedMessage(pod *corev1.Pod) string {
	return fmt.Sprintf("evicted pod %s (uid %s)", pod.Name, pod.UID)
}

// evicted tells whether req's status records the eviction of pod, this UID.
func evicted(req *opsv1alpha1.PostgresOpsRequest, pod *corev1.Pod) bool {
	cond := meta.FindStatusCondition(req.Status.Conditions, perPodCondition(ConditionEvictPod, pod.Name))
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.Message == evictedMessage(pod)
}

// plannedStandbys is every pod of the plan but the primary (ordinal 0).
func plannedStandbys(req *opsv1alpha1.PostgresOpsRequest) []string {
	plan := req.Status.RotateAuth
	primary := podName(req.Spec.DatabaseRef.Name, 0)
	var standbys []string
	for _, pods := range [][]string{plan.RestartPods, plan.RepointPods, plan.KeptPods} {
		for _, name := range pods {
			if name != primary {
				standbys = append(standbys, name)
			}
		}
	}
	return standbys
}

// streamingStandbys asks the primary which standbys stream from it, logging in with the
// target credential auth (PostgreSQL has it from UpdateCredential on) through the primary
// Service.
func (c *Controller) streamingStandbys(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, auth basicAuth) ([]string, error) {
	target, err := c.primaryTarget(req)
	if err != nil {
		return nil, err
	}
	target.User, target.Password = auth.username, auth.password
	names, err := c.db.StreamingStandbyNames(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("checking replication on Postgres %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	return names, nil
}
