package opsmanager

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// ReasonPauseLost fails a request whose pause was taken away (removed by hand).
const ReasonPauseLost = "PauseLost"

// The pause belongs to a request: status.pausedBy on the Postgres names it (name and UID)
// next to the Paused condition. The request asks for it in its own status, written with
// its plan (opsv1alpha1's AsksForPause: PauseDatabase started and not completed), and the
// provisioner, the only writer of a pause, grants it for the oldest request that asks once no
// other running request holds it, and drops a pause whose request is gone or ended. So the
// ops-manager writes nothing to pause, no pause exists before the plan is durable, and two
// requests can never both believe they hold it. Giving the pause back removes the condition
// and leaves pausedBy naming the request that released it, which is never granted a pause
// again.

// pauseDatabase waits until the provisioner has paused the database for this request. It
// reads the Postgres live: a cache may lag the grant, or still show a pause this request
// has given back already (in a sync whose status write was lost), and the steps after this
// one must only run under the pause.
func (c *Controller) pauseDatabase(ctx context.Context, r *rotation) (outcome, error) {
	pg, err := c.liveDatabase(ctx, r.req)
	if err != nil {
		return outcome{}, err
	}
	switch holder := pg.Status.PausedBy; {
	case pg.DeletionTimestamp != nil:
		// Its deletion waits for a pause of a running request; the pause would wait for nothing.
		return outcome{}, fatal(ReasonDatabaseNotFound, "Postgres %s is being deleted", pg.Name)
	case heldBy(pg, r.req):
		return completed("Postgres %s is paused for this request", pg.Name), nil
	case releasedBy(pg, r.req):
		// Granted and given back already: removed by hand, or resumed by this request in a
		// sync whose status write was lost. A request is granted its pause once, and
		// cleanup finds out from PostgreSQL what that sync did.
		return outcome{}, pauseLost(pg)
	case holder != nil && holder.UID != r.req.UID && meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) != nil:
		return waiting("waiting for the provisioner to pause Postgres %s, now paused by PostgresOpsRequest %s "+
			"(a running request keeps it until it ends)", pg.Name, holder.Name), nil
	}
	return waiting("waiting for the provisioner to pause Postgres %s", pg.Name), nil
}

// checkPauseHeld fails the request when the pause it holds was taken away. The cache is
// consulted first, and only a cache that shows no pause of this request is confirmed live.
func (c *Controller) checkPauseHeld(ctx context.Context, r *rotation) error {
	if heldBy(r.pg, r.req) {
		return nil
	}
	pg, err := c.liveDatabase(ctx, r.req)
	if err != nil {
		return err
	}
	if heldBy(pg, r.req) {
		return nil
	}
	if resumeRecorded(pg, r.req) {
		return errAlreadyResumed
	}
	return pauseLost(pg)
}

func pauseLost(pg *kubedbv1.Postgres) error {
	return fatal(ReasonPauseLost, "the pause of Postgres %s was removed while the request was running; "+
		"the database was resumed, and the credential is checked and rolled forward if PostgreSQL already has the new one", pg.Name)
}

// errAlreadyResumed says that this request's ResumeDatabase already ran, in a sync whose
// status write was lost: every step before it had completed in that sync.
var errAlreadyResumed = errors.New("the database was already resumed by this request")

// resumeRecorded tells whether pg records this request's resume: the credential change at
// the time UpdateCredential completed, in the target Secret.
func resumeRecorded(pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest) bool {
	changed := meta.FindStatusCondition(req.Status.Conditions, ConditionUpdateCredential)
	if changed == nil || changed.Status != metav1.ConditionTrue || pg.Status.AuthSecret == nil || pg.Status.AuthSecret.LastUpdateTimestamp == nil {
		return false
	}
	return !pg.Status.AuthSecret.LastUpdateTimestamp.Before(&changed.LastTransitionTime) && pg.Status.AuthSecret.Name == req.Status.RotateAuth.TargetSecret
}

func heldBy(pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest) bool {
	return pg.Status.PausedBy != nil && pg.Status.PausedBy.UID == req.UID &&
		meta.IsStatusConditionTrue(pg.Status.Conditions, kubedbv1.ConditionPaused)
}

// resumeDatabase hands the database back to the provisioner and records when its
// credential changed and in which Secret.
func (c *Controller) resumeDatabase(ctx context.Context, r *rotation) (outcome, error) {
	changedAt := meta.FindStatusCondition(r.req.Status.Conditions, ConditionUpdateCredential).LastTransitionTime
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pg, err := c.liveDatabase(ctx, r.req)
		if err != nil {
			return err
		}
		target := r.req.Status.RotateAuth.TargetSecret
		if !pausedByRequest(pg, r.req) && resumeRecorded(pg, r.req) {
			return nil
		}
		if pausedByRequest(pg, r.req) {
			releasePause(pg)
		}
		pg.Status.AuthSecret = &kubedbv1.AuthSecretStatus{LastUpdateTimestamp: &changedAt, Name: target}
		_, err = c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).UpdateStatus(ctx, pg, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return outcome{}, fmt.Errorf("resuming Postgres %s: %w", r.req.Spec.DatabaseRef.Name, err)
	}
	// The step's completion is the event; cleanup's resume of a request that stopped early
	// has its own (resumeIfHeld).
	return completed("Postgres %s is resumed", r.req.Spec.DatabaseRef.Name), nil
}

// pausedByRequest tells whether pg's pause, asked or held, is req's.
func pausedByRequest(pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest) bool {
	return namesRequest(pg, req) && meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) != nil
}

// releasedBy tells whether pg records req as the request that held its last pause and gave
// it back (or had it taken away): pausedBy still names it, without the Paused condition.
func releasedBy(pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest) bool {
	return namesRequest(pg, req) && meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) == nil
}

func namesRequest(pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest) bool {
	return pg.Status.PausedBy != nil && pg.Status.PausedBy.UID == req.UID
}

// releasePause gives pg's pause back. status.pausedBy keeps naming the request, as the one
// that released it: the provisioner never grants a pause twice to a request, so a cache
// that still shows its ask, from before it was granted, cannot pause the database again.
func releasePause(pg *kubedbv1.Postgres) {
	meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
}

// resumeIfHeld removes req's pause, if the database still carries it. A pause of another
// request is left alone. Unless ResumeDatabase completed, the Postgres is read: the pause
// may have been granted after the request's last status write, or taken up in a sync whose
// status write was lost.
func (c *Controller) resumeIfHeld(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	if isTrue(req.Status.Conditions, ConditionResumeDatabase) {
		return nil // resumed by the step, after a live read
	}
	resumed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pg, err := c.pgopsClient.KubedbV1().Postgreses(req.Namespace).Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil || !pausedByRequest(pg, req) {
			return err
		}
		releasePause(pg)
		_, err = c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).UpdateStatus(ctx, pg, metav1.UpdateOptions{FieldManager: FieldManager})
		resumed = err == nil
		return err
	})
	if err != nil {
		return fmt.Errorf("resuming Postgres %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	if resumed {
		c.recorder.Eventf(req, corev1.EventTypeNormal, "ResumeDatabase", "resumed Postgres %s", req.Spec.DatabaseRef.Name)
	}
	return nil
}

// liveDatabase reads the request's Postgres from the API server and checks that it is the
// database the request started on.
func (c *Controller) liveDatabase(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (*kubedbv1.Postgres, error) {
	pg, err := c.pgopsClient.KubedbV1().Postgreses(req.Namespace).Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fatal(ReasonDatabaseNotFound, "Postgres %s/%s was deleted while the request was running", req.Namespace, req.Spec.DatabaseRef.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Postgres %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	if plan := req.Status.RotateAuth; plan != nil && pg.UID != plan.DatabaseUID {
		return nil, fatal(ReasonDatabaseReplaced, "Postgres %s was deleted and created again while the request was running", pg.Name)
	}
	return pg, nil
}
