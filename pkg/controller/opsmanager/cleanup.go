package opsmanager

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// cleanUp runs for a request that has ended, or is being deleted before it ended. Whatever
// happened, it leaves the database resumed and its Secret's credential working, then drops
// the staged credential and the finalizer. Each part is idempotent.
func (c *Controller) cleanUp(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	if !hasFinalizer(req) {
		return nil
	}
	// Resume first: a database must never stay paused, even while its credential cannot
	// be checked (for example because its pods are down).
	if err := c.resumeIfIdle(ctx, req); err != nil {
		return err
	}
	if req.Status.Phase != opsv1alpha1.OpsRequestPhaseSuccessful {
		if err := c.reconcileCredential(ctx, req); err != nil {
			return err
		}
	}
	err := c.kubeClient.CoreV1().Secrets(req.Namespace).Delete(ctx, stagedSecretName(req), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the staged credential: %w", err)
	}
	return c.removeFinalizer(ctx, req)
}

// reconcileCredential makes sure the database's Secret logs in after a request stopped
// part-way. If PostgreSQL already has the staged credential, the Secrets are rolled
// forward to it; PostgreSQL is never left with a credential no Secret holds.
func (c *Controller) reconcileCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	cond := meta.FindStatusCondition(req.Status.Conditions, ConditionUpdateCredential)
	if cond == nil || cond.Status == metav1.ConditionTrue {
		return nil // PostgreSQL was never touched, or Kubernetes already agrees with it
	}
	staged, err := c.kubeClient.CoreV1().Secrets(req.Namespace).Get(ctx, stagedSecretName(req), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // nothing was staged, so nothing was set
	}
	if err != nil {
		return err
	}
	stagedAuth, problem := basicAuthFrom(staged)
	if problem != "" {
		return nil
	}
	cached, err := c.postgreses.Postgreses(req.Namespace).Get(req.Spec.DatabaseRef.Name)
	if apierrors.IsNotFound(err) {
		return nil // the database is gone
	}
	if err != nil {
		return err
	}
	pg := cached.DeepCopy()
	current, _, err := c.currentCredential(ctx, pg)
	if err != nil {
		return err
	}
	target, err := c.primaryTarget(pg)
	if err != nil {
		return err
	}
	if ok, err := c.db.VerifyLogin(ctx, target, current.username, current.password); err != nil {
		return fmt.Errorf("checking the credential of Postgres %s after the request stopped: %w", pg.Name, err)
	} else if ok {
		return nil
	}
	if ok, err := c.db.VerifyLogin(ctx, target, stagedAuth.username, stagedAuth.password); err != nil {
		return err
	} else if !ok {
		c.recorder.Eventf(req, corev1.EventTypeWarning, "CredentialRejected",
			"PostgreSQL rejects both the credential in Secret %s and the staged one", pg.Spec.AuthSecret.Name)
		return nil
	}
	klog.FromContext(ctx).Info("Rolling the Secret forward to the credential PostgreSQL has", "postgres", pg.Name)
	if err := c.publishCredential(ctx, req, pg, stagedAuth); err != nil {
		return err
	}
	c.recorder.Eventf(req, corev1.EventTypeNormal, "CredentialRolledForward",
		"PostgreSQL already had the new credential; Secret %s now holds it too", pg.Spec.AuthSecret.Name)
	return nil
}

func (c *Controller) removeFinalizer(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	kept := []string{}
	for _, f := range req.Finalizers {
		if f != Finalizer {
			kept = append(kept, f)
		}
	}
	_, err := c.patchFinalizers(ctx, req, kept)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
