package opsmanager

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// pauseDatabase asks the provisioner to leave the database alone (Paused=Unknown) and
// waits until it confirms (Paused=True).
func (c *Controller) pauseDatabase(ctx context.Context, r *rotation) (outcome, error) {
	paused := meta.FindStatusCondition(r.pg.Status.Conditions, kubedbv1.ConditionPaused)
	switch {
	case paused != nil && paused.Status == metav1.ConditionTrue:
		return completed("Postgres %s is paused", r.pg.Name), nil
	case paused != nil && paused.Status == metav1.ConditionUnknown:
		return waiting("waiting for the provisioner to pause Postgres %s", r.pg.Name), nil
	}
	meta.SetStatusCondition(&r.pg.Status.Conditions, metav1.Condition{
		Type: kubedbv1.ConditionPaused, Status: metav1.ConditionUnknown, Reason: "PauseRequested",
		Message:            fmt.Sprintf("paused by PostgresOpsRequest %s", r.req.Name),
		ObservedGeneration: r.pg.Generation,
	})
	if _, err := c.pgopsClient.KubedbV1().Postgreses(r.pg.Namespace).UpdateStatus(ctx, r.pg,
		metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return outcome{}, fmt.Errorf("asking to pause Postgres %s: %w", r.pg.Name, err)
	}
	c.recorder.Eventf(r.req, corev1.EventTypeNormal, "PauseDatabase", "pausing Postgres %s", r.pg.Name)
	return waiting("waiting for the provisioner to pause Postgres %s", r.pg.Name), nil
}

// resumeDatabase hands the database back to the provisioner and records when its
// credential changed.
func (c *Controller) resumeDatabase(ctx context.Context, r *rotation) (outcome, error) {
	changedAt := meta.FindStatusCondition(r.req.Status.Conditions, ConditionUpdateCredential).LastTransitionTime
	pausedNow := meta.FindStatusCondition(r.pg.Status.Conditions, kubedbv1.ConditionPaused) != nil
	recorded := r.pg.Status.AuthSecret != nil && r.pg.Status.AuthSecret.LastUpdateTimestamp != nil &&
		!r.pg.Status.AuthSecret.LastUpdateTimestamp.Before(&changedAt)
	if !pausedNow && recorded {
		return completed("Postgres %s is resumed", r.pg.Name), nil
	}
	meta.RemoveStatusCondition(&r.pg.Status.Conditions, kubedbv1.ConditionPaused)
	r.pg.Status.AuthSecret = &kubedbv1.Age{LastUpdateTimestamp: &changedAt}
	if _, err := c.pgopsClient.KubedbV1().Postgreses(r.pg.Namespace).UpdateStatus(ctx, r.pg,
		metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return outcome{}, fmt.Errorf("resuming Postgres %s: %w", r.pg.Name, err)
	}
	c.recorder.Eventf(r.req, corev1.EventTypeNormal, "ResumeDatabase", "resumed Postgres %s", r.pg.Name)
	return completed("Postgres %s is resumed", r.pg.Name), nil
}

// resumeIfIdle removes the pause that req asked for, unless another request for the same
// database is running (it holds the pause now).
func (c *Controller) resumeIfIdle(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	if meta.FindStatusCondition(req.Status.Conditions, ConditionPauseDatabase) == nil {
		return nil // never asked for a pause
	}
	for _, other := range c.requestsFor(req.Namespace, req.Spec.DatabaseRef.Name) {
		if other.UID != req.UID && other.Status.Phase == opsv1alpha1.OpsRequestPhaseProgressing {
			return nil
		}
	}
	cached, err := c.postgreses.Postgreses(req.Namespace).Get(req.Spec.DatabaseRef.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if meta.FindStatusCondition(cached.Status.Conditions, kubedbv1.ConditionPaused) == nil {
		return nil
	}
	pg := cached.DeepCopy()
	meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
	if _, err := c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).UpdateStatus(ctx, pg,
		metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("resuming Postgres %s: %w", pg.Name, err)
	}
	c.recorder.Eventf(req, corev1.EventTypeNormal, "ResumeDatabase", "resumed Postgres %s", pg.Name)
	return nil
}
