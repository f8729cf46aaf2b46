package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// Reasons a Pending request waits or ends.
const (
	ReasonWaitingForRequest  = "WaitingForOtherRequest"
	ReasonWaitingForDatabase = "WaitingForDatabase"
	ReasonSuperseded         = "Superseded"
	ReasonDatabaseNotFound   = "DatabaseNotFound"
	ReasonDatabaseNotReady   = "DatabaseNotReady"
	ReasonInvalidRequest     = "InvalidRequest"
	ReasonDatabaseReplaced   = "DatabaseReplaced"
)

var everything = labels.Everything()

// schedule decides, in memory, whether a Pending request starts, waits, is skipped or fails:
//   - one request per database is Progressing at a time, in creation order;
//   - of several Pending requests of one type for one database, only the newest runs;
//   - apply IfReady waits for phase Ready, Always only for the database to be provisioned,
//     and neither runs on a halted database or one whose StatefulSet or Service is missing;
//   - waiting for the database is bounded by spec.timeout.
func (c *Controller) schedule(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (syncResult, error) {
	now := c.clock.Now()
	if req.Spec.Type != opsv1alpha1.OpsRequestTypeRotateAuth {
		c.fail(ctx, req, ReasonInvalidRequest, fmt.Sprintf("unsupported type %q", req.Spec.Type))
		return syncResult{}, nil
	}
	pg, err := c.postgreses.Postgreses(req.Namespace).Get(req.Spec.DatabaseRef.Name)
	if apierrors.IsNotFound(err) {
		c.fail(ctx, req, ReasonDatabaseNotFound, fmt.Sprintf("Postgres %s/%s does not exist", req.Namespace, req.Spec.DatabaseRef.Name))
		return syncResult{}, nil
	}
	if err != nil {
		return syncResult{}, err
	}

	if pg.DeletionTimestamp != nil {
		c.fail(ctx, req, ReasonDatabaseNotFound, fmt.Sprintf("Postgres %s/%s is being deleted", req.Namespace, pg.Name))
		return syncResult{}, nil
	}

	older, newest := c.queuedAround(req)
	if newest != nil {
		req.Status.Phase = opsv1alpha1.OpsRequestPhaseSkipped
		msg := fmt.Sprintf("superseded by the newer PostgresOpsRequest %s", newest.Name)
		setCondition(&req.Status.Conditions, ConditionSkipped, metav1.ConditionTrue, ReasonSuperseded, msg, req.Generation, now)
		setCondition(&req.Status.Conditions, ConditionPending, metav1.ConditionFalse, ReasonSuperseded, msg, req.Generation, now)
		return syncResult{}, nil
	}
	if older != nil {
		c.stayPending(req, ReasonWaitingForRequest, fmt.Sprintf("waiting for PostgresOpsRequest %s to finish", older.Name))
		return syncResult{}, nil
	}

	// Reject bad input before the database is paused, and decide what the rotation acts on.
	plan, err := c.planRotation(ctx, req)
	var permanent *failure
	if err != nil && !errors.As(err, &permanent) {
		// A plan that cannot be made yet (no auth Secret yet, a read that failed) is
		// retried, within spec.timeout like a database that is not ready.
		if c.waitedTooLong(ctx, req, pg, err.Error()) {
			return syncResult{}, nil
		}
		// The rate limiter's backoff grows to minutes: come back by the deadline anyway.
		return syncResult{requeueAfter: c.waitLeft(req) + time.Second}, err
	}
	if err != nil {
		return c.failOrRetry(ctx, req, err, syncResult{})
	}

	// A Service or StatefulSet of another object under this database's names fails the
	// request at once; a missing one (halted, still provisioning) is waited for with the
	// database.
	ownership := c.checkWorkloadsOwned(req, plan)
	var conflict *failure
	if errors.As(ownership, &conflict) {
		c.fail(ctx, req, conflict.reason, conflict.message)
		return syncResult{}, nil
	}
	ready, why := databaseReadyFor(pg, req.Spec.Apply)
	if ready && ownership != nil {
		// A StatefulSet or Service not there (yet) is waited for like a database that is
		// not ready: within spec.timeout, never for ever.
		ready, why = false, ownership.Error()
	}
	if !ready {
		if c.waitedTooLong(ctx, req, pg, why) {
			return syncResult{}, nil
		}
		return syncResult{requeueAfter: c.waitLeft(req) + time.Second}, nil
	}

	req.Status.Phase = opsv1alpha1.OpsRequestPhaseProgressing
	req.Status.RotateAuth = plan
	msg := fmt.Sprintf("rotating the credential of Postgres %s", pg.Name)
	setCondition(&req.Status.Conditions, ConditionPending, metav1.ConditionFalse, "Started", msg, req.Generation, now)
	setCondition(&req.Status.Conditions, ConditionRotateAuth, metav1.ConditionTrue, "Started", msg, req.Generation, now)
	c.recorder.Event(req, corev1.EventTypeNormal, "Starting", msg)
	return syncResult{}, nil
}

// waitedTooLong records that req waits for its database, for the reason why, and fails it
// once it has waited longer than spec.timeout; it reports whether it failed it.
func (c *Controller) waitedTooLong(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres, why string) bool {
	if c.waitLeft(req) < 0 {
		c.fail(ctx, req, ReasonDatabaseNotReady, fmt.Sprintf("Postgres %s was not ready within %s: %s", pg.Name, stepTimeout(req), why))
		return true
	}
	c.stayPending(req, ReasonWaitingForDatabase, why)
	return false
}

// waitLeft is how much longer req may wait for its database: spec.timeout from when it
// started waiting (now, when it was not waiting yet).
func (c *Controller) waitLeft(req *opsv1alpha1.PostgresOpsRequest) time.Duration {
	now := c.clock.Now()
	waitingSince := now
	if cond := meta.FindStatusCondition(req.Status.Conditions, ConditionPending); cond != nil && cond.Reason == ReasonWaitingForDatabase {
		waitingSince = cond.LastTransitionTime.Time
	}
	return stepTimeout(req) - now.Sub(waitingSince)
}

func (c *Controller) stayPending(req *opsv1alpha1.PostgresOpsRequest, reason, message string) {
	setCondition(&req.Status.Conditions, ConditionPending, metav1.ConditionTrue, reason, message, req.Generation, c.clock.Now())
}

// queuedAround looks at the other live requests for req's database. newest is the newest
// Pending request of req's type created after req: it supersedes req, which then never
// runs. Otherwise older is the request req waits for: the one that has started and not yet
// released the database (see startedAndNotReleased), else the oldest Pending one created
// before req.
func (c *Controller) queuedAround(req *opsv1alpha1.PostgresOpsRequest) (older, newest *opsv1alpha1.PostgresOpsRequest) {
	siblings := c.requestsFor(req.Namespace, req.Spec.DatabaseRef.Name)
	sort.Slice(siblings, func(i, j int) bool { return createdBefore(siblings[i], siblings[j]) })
	var running, olderPending *opsv1alpha1.PostgresOpsRequest
	for _, other := range siblings {
		if other.UID == req.UID {
			continue
		}
		if startedAndNotReleased(other) {
			// Still running, or ended or deleted but still cleaning up (rolling forward,
			// finishing restarts): the next request must not touch the database meanwhile.
			running = other
			continue
		}
		if other.DeletionTimestamp != nil {
			continue
		}
		switch other.Status.Phase {
		case "", opsv1alpha1.OpsRequestPhasePending:
			if createdBefore(other, req) {
				if olderPending == nil {
					olderPending = other
				}
			} else if other.Spec.Type == req.Spec.Type {
				newest = other // siblings are sorted, so the last one wins
			}
		}
	}
	if newest != nil {
		return nil, newest
	}
	if running != nil {
		return running, nil
	}
	return olderPending, nil
}

// startedAndNotReleased tells whether req has started working on its database and not yet
// released it: Progressing, or past its start with its finalizer still held.
func startedAndNotReleased(req *opsv1alpha1.PostgresOpsRequest) bool {
	if req.Status.Phase == opsv1alpha1.OpsRequestPhaseProgressing {
		return true
	}
	return req.Status.RotateAuth != nil && hasFinalizer(req)
}

func createdBefore(a, b *opsv1alpha1.PostgresOpsRequest) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// databaseReadyFor tells whether the database may be operated on under apply, and if not,
// why, in words for the user.
func databaseReadyFor(pg *kubedbv1.Postgres, apply opsv1alpha1.ApplyOption) (bool, string) {
	if pg.Spec.Halted || pg.Status.Phase == kubedbv1.DatabasePhaseHalted {
		// Whatever apply says: a halted database has no server to rotate.
		return false, fmt.Sprintf("Postgres %s is halted; set spec.halted: false to run this request", pg.Name)
	}
	if apply == opsv1alpha1.ApplyOptionAlways {
		if meta.IsStatusConditionTrue(pg.Status.Conditions, kubedbv1.ConditionProvisioned) {
			return true, ""
		}
		return false, fmt.Sprintf("waiting for Postgres %s to be provisioned (phase %q)", pg.Name, pg.Status.Phase)
	}
	if pg.Status.Phase == kubedbv1.DatabasePhaseReady {
		return true, ""
	}
	if ready := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionReady); ready != nil &&
		ready.Reason == kubedbv1.ReasonAuthSecretOutOfSync && pg.Status.Phase == kubedbv1.DatabasePhaseNotReady {
		// The database runs; its only fault is an auth Secret that disagrees with
		// PostgreSQL, which is what a rotation repairs.
		return true, ""
	}
	return false, fmt.Sprintf("waiting for Postgres %s to be Ready (phase %q); use apply: Always to run anyway", pg.Name, pg.Status.Phase)
}
