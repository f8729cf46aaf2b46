package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
)

// Reasons of the cleanup of a request that stopped past the point of no return.
const (
	ReasonNamespaceTerminating = "NamespaceTerminating"
	ReasonSecretRestored       = "SecretRestored"
	ReasonStagedCredentialKept = "StagedCredentialKept"
	ReasonRolledForward        = "RolledForward"
	ReasonFinishingRestarts    = "FinishingRestarts"
	ReasonStandbysNeedRestart  = "StandbysNeedRestart"
)

// cleanUp runs for a request that has ended, or is being deleted before it ended. Whatever
// happened, it leaves the database resumed and its Secret's credential working; when the
// request stopped past the point of no return it also finishes the job: the Secrets and the
// pod template are rolled forward to the credential PostgreSQL has, and standbys still
// carrying the old one are restarted. Then it releases the staged credential and the
// finalizer. Each part is idempotent.
func (c *Controller) cleanUp(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (syncResult, error) {
	if !hasFinalizer(req) {
		c.forget(req.UID) // released already, perhaps by hand
		return syncResult{}, nil
	}
	// Past the recorded point of no return PostgreSQL has the staged credential: record it
	// before the resume lets the provisioner act again (a deletion, then a Postgres of the
	// same name adopting the record). Best effort, needing no connection; the roll forward
	// below does it again and reports errors.
	if req.Status.RotateAuth != nil && pastPointOfNoReturn(req) {
		if secret, err := c.getStaged(ctx, req); err == nil && secret != nil {
			if staged, err := stagedFrom(secret); err == nil {
				_, _ = c.recordAccepted(ctx, req, staged)
			}
		}
	}
	// Resume first: a database must never stay paused, even while its credential cannot
	// be checked (for example because its pods are down).
	if err := c.resumeIfHeld(ctx, req); err != nil {
		return syncResult{}, err
	}
	keepStaged := false
	if req.Status.RotateAuth != nil {
		res, keep, err := c.finishRotation(ctx, req)
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			// Nothing can be created in a namespace being deleted (a deleted Secret written
			// again), and all of it goes, the data included: retrying would hold the
			// namespace's deletion for ever.
			c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonNamespaceTerminating,
				"namespace %s is being deleted: the stopped rotation is not finished, and its staged credential goes with the namespace", req.Namespace)
			res, keep, err = syncResult{}, false, nil
		}
		if err != nil || res.requeueAfter > 0 {
			return res, err
		}
		keepStaged = keep
	}
	if keepStaged {
		// No finalizer outlives its request: nothing would release it, and it would hold a
		// later namespace deletion for ever. The Secret itself stays.
		if err := c.unguardStaged(ctx, req); err != nil {
			return syncResult{}, err
		}
	} else if err := c.releaseStaged(ctx, req); err != nil {
		return syncResult{}, err
	}
	if err := c.removeFinalizer(ctx, req); err != nil {
		return syncResult{}, err
	}
	c.forget(req.UID)
	return syncResult{}, nil
}

// finishRotation makes sure, before the staged copy of the credential goes, that the
// Secrets agree with PostgreSQL: for a request that stopped before it succeeded, the Secrets
// are rolled forward to the credential PostgreSQL has and the standbys restarted on it; for
// every request whose credential PostgreSQL has, the target Secret holds it (restoreTarget).
// keepStaged says the staged credential must be kept (see rollForward's uncertain).
func (c *Controller) finishRotation(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (res syncResult, keepStaged bool, err error) {
	succeeded := req.Status.Phase == opsv1alpha1.OpsRequestPhaseSuccessful
	if !succeeded {
		published, uncertain, err := c.rollForward(ctx, req)
		if err != nil || !published {
			return syncResult{}, uncertain, err
		}
	}
	gone, err := c.restoreTarget(ctx, req)
	if err != nil || gone {
		return syncResult{}, gone, err
	}
	if succeeded {
		return syncResult{}, false, nil
	}
	res, err = c.finishRestarts(ctx, req)
	return res, false, err
}

// restoreTarget writes the staged credential into the target Secret again when it no longer
// holds it: after the request wrote it, another actor changed it back (a GitOps self-heal,
// a secret operator's refresh, a stale kubectl apply), made it unusable or deleted it.
// PostgreSQL has the staged credential, and the staged copy may be the only one left, so it
// is released only once the Secret holds it again. Call it only when PostgreSQL has the
// staged credential.
//
// gone says the planned database is gone or replaced: its Secret may now be another
// database's, or deleted by its WipeOut, so nothing is written, and the staged Secret is
// kept (rollForward's uncertain) with a Warning event.
func (c *Controller) restoreTarget(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (gone bool, err error) {
	if appliesSecretEdit(req) {
		return false, nil // the edited Secret is the user's word: a newer edit is applied next
	}
	secret, err := c.getStaged(ctx, req)
	var conflict *failure
	if errors.As(err, &conflict) || (err == nil && secret == nil) {
		return false, nil // nothing staged by this request
	}
	if err != nil {
		return false, err
	}
	staged, err := stagedFrom(secret)
	if err != nil {
		return false, nil
	}
	plan := req.Status.RotateAuth
	current, _, readErr := c.readCredential(ctx, req.Namespace, plan.TargetSecret)
	if readErr == nil && current == staged {
		return false, nil
	}
	var unusable *failure
	if readErr != nil && !apierrors.IsNotFound(readErr) && !errors.As(readErr, &unusable) {
		return false, readErr
	}
	if _, err := c.liveDatabase(ctx, req); err != nil {
		var replaced *failure
		if !errors.As(err, &replaced) {
			return false, err
		}
		c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonStagedCredentialKept,
			"Secret %s no longer holds the credential PostgreSQL had when Postgres %s went away; Secret %s keeps it: "+
				"use it if the kept data needs it, then delete Secret %s", plan.TargetSecret, req.Spec.DatabaseRef.Name, plan.StagedSecret, plan.StagedSecret)
		return true, nil
	}
	// A deleted Secret is created again, and putCredential says so in an event of its own;
	// an unusable one (a key removed) is overwritten.
	guard, err := c.guardFor(ctx, req, staged)
	if err != nil {
		return false, err
	}
	if err := c.putCredential(ctx, req, plan.TargetSecret, staged, nil, guard, c.clock.Now()); err != nil {
		return false, err
	}
	if readErr == nil || errors.As(readErr, &unusable) {
		c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonSecretRestored,
			"Secret %s no longer held the credential PostgreSQL has: another actor changed it during the rotation; it is written again from the staged copy", plan.TargetSecret)
	}
	return false, nil
}

// rollForward makes the Secrets agree with PostgreSQL after a request stopped part-way,
// and tells whether the new credential is (now) the published one. Past the recorded point
// of no return PostgreSQL has the staged credential; before it, PostgreSQL is asked, because
// the operator may have died between the ALTER ROLE and recording it. PostgreSQL is never
// left with a credential no Secret holds.
//
// uncertain says that PostgreSQL could not be asked (the database is gone or replaced)
// while it may have the staged credential: the staged Secret is then kept, with a Warning
// event naming it, because it may hold the only copy of the password the data has.
func (c *Controller) rollForward(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (published, uncertain bool, err error) {
	plan := req.Status.RotateAuth
	// Whether PostgreSQL was touched is decided by the staged Secret, not by a condition:
	// the status write after the ALTER ROLE may have been lost with the operator.
	secret, err := c.getStaged(ctx, req)
	var conflict *failure
	if errors.As(err, &conflict) {
		return false, false, nil // the name is someone else's: this request staged nothing
	}
	if err != nil {
		return false, false, err
	}
	if secret == nil {
		if pastPointOfNoReturn(req) && !isTrue(req.Status.Conditions, ConditionUpdateCredential) {
			c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonCredentialLost,
				"the staged credential Secret %s is gone, although PostgreSQL may have its credential; check that Secret %s logs in",
				plan.StagedSecret, plan.TargetSecret)
		}
		return isTrue(req.Status.Conditions, ConditionUpdateCredential), false, nil
	}
	staged, err := stagedFrom(secret)
	if err != nil {
		return false, false, nil
	}
	if isTrue(req.Status.Conditions, ConditionUpdateCredential) {
		return true, false, nil
	}
	if !pastPointOfNoReturn(req) {
		// The operator may have died between the ALTER ROLE and recording it: ask
		// PostgreSQL which credential it has.
		ok, gone, err := c.databaseHasStaged(ctx, req, staged)
		if gone {
			c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonStagedCredentialKept,
				"Postgres %s is gone, so it cannot be asked whether it already had the new credential; "+
					"Secret %s keeps it (the previous one is in Secret %s): use whichever logs in, then delete Secret %s",
				req.Spec.DatabaseRef.Name, plan.StagedSecret, plan.CurrentSecret, plan.StagedSecret)
			return false, true, nil
		}
		if err != nil || !ok {
			return false, false, err
		}
	}
	// PostgreSQL has the staged credential (recorded, or just checked): publish it. This
	// needs no connection, so it works while the database is down, or gone with its data
	// kept for a Postgres of the same name.
	klog.FromContext(ctx).Info("Rolling the Secret forward to the credential PostgreSQL has", "postgres", req.Spec.DatabaseRef.Name)
	if err := c.publishCredential(ctx, req, staged); err != nil {
		return false, false, err
	}
	msg := fmt.Sprintf("the request stopped after PostgreSQL accepted the new credential; Secret %s now holds it too", plan.TargetSecret)
	setCondition(&req.Status.Conditions, ConditionUpdateCredential, metav1.ConditionTrue, ReasonRolledForward, msg, req.Generation, c.clock.Now())
	if err := c.writeStatusInPlace(ctx, opsv1alpha1.OpsRequestStatus{}, req); err != nil {
		return false, false, err
	}
	c.recorder.Event(req, corev1.EventTypeNormal, "CredentialRolledForward", msg)
	return true, false, nil
}

// databaseHasStaged tells whether PostgreSQL has the staged password, by the role's stored
// verifier (pg_authid), never by a login, which a trust rule in pg_hba.conf answers with yes
// whatever the password; gone says the database is gone or replaced, so it cannot be asked.
func (c *Controller) databaseHasStaged(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, staged basicAuth) (has, gone bool, err error) {
	plan := req.Status.RotateAuth
	if _, err := c.liveDatabase(ctx, req); err != nil {
		var replaced *failure
		if errors.As(err, &replaced) {
			return false, true, nil
		}
		return false, false, err
	}
	target, err := c.primaryTarget(req)
	if err != nil {
		return false, false, err
	}
	current, recorded, err := c.acceptedCredential(ctx, req, plan.DatabaseUID, plan.CurrentSecret)
	if err != nil && !apierrors.IsNotFound(err) {
		return false, false, err
	}
	if err == nil && recorded && current == staged {
		return true, false, nil // recorded once PostgreSQL accepted it
	}
	// Log in with whichever of the two PostgreSQL takes, then ask pg_authid.
	for _, as := range []basicAuth{staged, current} {
		if as.password == "" {
			continue
		}
		asWho := target
		asWho.User, asWho.Password = as.username, as.password
		has, err := c.db.PasswordMatches(ctx, asWho, staged.username, staged.password)
		if credential.Classify(err) == credential.ClassAuth {
			continue
		}
		if err != nil {
			return false, false, fmt.Errorf("asking Postgres %s which password it has after the request stopped: %w", req.Spec.DatabaseRef.Name, err)
		}
		return has, false, nil
	}
	c.recorder.Eventf(req, corev1.EventTypeWarning, ReasonCredentialRejected,
		"PostgreSQL rejects both the credential it was known to accept and the staged one (Secret %s)", plan.StagedSecret)
	return false, false, nil
}

// finishRestarts restarts, after a request stopped, the planned standbys that still run
// a pod revision from before the new credential, and re-points those the plan re-points
// (mode None): their next reconnect to the primary would fail otherwise. The primary is
// left alone: it does not need the restart. Bounded by spec.timeout; past it, a Warning
// event names the standbys left, and the Postgres's phase shows them.
func (c *Controller) finishRestarts(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (syncResult, error) {
	plan := req.Status.RotateAuth
	primary := podName(req.Spec.DatabaseRef.Name, 0)
	var standbys []string
	for _, name := range plan.RestartPods {
		if name != primary {
			standbys = append(standbys, name)
		}
	}
	if len(standbys)+len(plan.RepointPods) == 0 || isTrue(req.Status.Conditions, ConditionRestartNodes) {
		return syncResult{}, nil
	}
	secretName, err := c.podSecret(ctx, req)
	if err != nil {
		return syncResult{}, err
	}
	written, err := c.pointStatefulSetAt(ctx, req, secretName)
	if apierrors.IsNotFound(err) {
		return syncResult{}, nil // the database is gone
	}
	if err != nil {
		return syncResult{}, err
	}

	now := c.clock.Now()
	r := &rotation{req: req, now: now}
	before := *req.Status.DeepCopy()
	cond := meta.FindStatusCondition(req.Status.Conditions, ConditionRestartNodes)
	if cond == nil || cond.Reason != ReasonFinishingRestarts {
		setCondition(&req.Status.Conditions, ConditionRestartNodes, metav1.ConditionFalse, ReasonFinishingRestarts,
			"the request stopped; restarting the standbys that still carry the old credential", req.Generation, now)
		cond = meta.FindStatusCondition(req.Status.Conditions, ConditionRestartNodes)
	}
	timeout := stepTimeout(req)
	elapsed := now.Sub(cond.LastTransitionTime.Time)
	if elapsed > timeout {
		msg := fmt.Sprintf("gave up restarting standbys after %s; a standby on an old pod revision must be deleted to pick up the credential in Secret %s: %s",
			timeout, plan.TargetSecret, strings.Join(append(standbys, plan.RepointPods...), ", "))
		setCondition(&req.Status.Conditions, ConditionRestartNodes, metav1.ConditionFalse, ReasonStandbysNeedRestart, msg, req.Generation, now)
		if err := c.writeStatusInPlace(ctx, before, req); err != nil {
			return syncResult{}, err
		}
		c.recorder.Event(req, corev1.EventTypeWarning, ReasonStandbysNeedRestart, msg)
		return syncResult{}, nil
	}
	deadline := syncResult{requeueAfter: timeout - elapsed + time.Second}

	sts, err := c.plannedStatefulSet(req)
	if err != nil {
		return deadline, err
	}
	if !templateObserved(sts, written) {
		return deadline, c.writeStatusInPlace(ctx, before, req)
	}
	stopped := func(out outcome) (syncResult, error) {
		setCondition(&req.Status.Conditions, ConditionRestartNodes, metav1.ConditionFalse, ReasonFinishingRestarts,
			"the request stopped; "+out.message, req.Generation, now)
		if out.recheckAfter > 0 && out.recheckAfter < deadline.requeueAfter {
			deadline.requeueAfter = out.recheckAfter
		}
		return deadline, c.writeStatusInPlace(ctx, before, req)
	}
	for _, name := range standbys {
		out, done, err := c.restartPod(ctx, r, sts, name)
		if err != nil {
			return deadline, err
		}
		if !done {
			return stopped(out)
		}
	}
	if len(plan.RepointPods) > 0 {
		auth, _, err := c.targetCredential(ctx, req)
		if err != nil {
			return deadline, err
		}
		out, done, err := c.repointStandbys(ctx, r, sts, auth, plan.RepointPods)
		if err != nil {
			return deadline, err
		}
		if !done {
			return stopped(out)
		}
	}
	msg := fmt.Sprintf("the request stopped; standbys %s carry the credential in Secret %s", strings.Join(append(standbys, plan.RepointPods...), ", "), plan.TargetSecret)
	setCondition(&req.Status.Conditions, ConditionRestartNodes, metav1.ConditionTrue, ReasonCompleted, msg, req.Generation, now)
	if err := c.writeStatusInPlace(ctx, before, req); err != nil {
		return syncResult{}, err
	}
	c.recorder.Event(req, corev1.EventTypeNormal, ConditionRestartNodes, msg)
	return syncResult{}, nil
}

func (c *Controller) removeFinalizer(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	_, err := c.patchFinalizers(ctx, req, withoutFinalizer(req.Finalizers, Finalizer))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
