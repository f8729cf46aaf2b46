package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// The RotateAuth state machine. Pending requests are scheduled by schedule.go; once one
// is Progressing (condition RotateAuth), its steps run in this order, each until its
// condition is True. A step's condition is False with reason InProgress while it runs;
// its LastTransitionTime is when it started, which bounds it by spec.timeout.
//
//	Pending ──schedule──▶ Progressing ─▶ PauseDatabase ─▶ UpdateCredential ─▶ UpdateStatefulSets
//	   │                                                                            │
//	   ├─▶ Skipped (a newer request of the same type supersedes it)                 ▼
//	   └─▶ Failed  (bad input, database gone, not ready in time)    RestartNodes ─▶ ResumeDatabase ─▶ Successful
//
// Any step may end the request Failed; cleanUp (cleanup.go) then resumes the database
// and makes sure the credential in its Secret logs in.
var rotateAuthSteps = []step{
	{ConditionPauseDatabase, "pausing the database", (*Controller).pauseDatabase},
	{ConditionUpdateCredential, "setting the new credential in PostgreSQL and in the Secret", (*Controller).updateCredential},
	{ConditionUpdateStatefulSets, "pointing the pod template at the new credential", (*Controller).updateStatefulSets},
	{ConditionRestartNodes, "restarting pods, standbys first", (*Controller).restartNodes},
	{ConditionResumeDatabase, "resuming the database", (*Controller).resumeDatabase},
}

type step struct {
	condition string
	starting  string
	run       func(c *Controller, ctx context.Context, r *rotation) (outcome, error)
}

// rotation is what a step works on: the request (whose status holds the plan and which the
// step may extend in memory, for example with per-pod conditions; the sync writes it) and
// the database as the cache has it, for cheap checks only: decisions read the plan or the
// API server.
type rotation struct {
	req *opsv1alpha1.PostgresOpsRequest
	pg  *kubedbv1.Postgres
	now time.Time
}

// outcome is where a step got to in one sync.
type outcome struct {
	// done means the step's condition becomes True with message.
	done    bool
	message string
	// recheckAfter asks for another look at something no informer reports.
	recheckAfter time.Duration
	// answerAwaited says the step waits for another controller's answer to a write, which
	// comes within moments (the provisioner's to a pause, the StatefulSet controller's to a
	// new template): the status write may wait for it (see unwritten.go).
	answerAwaited bool
}

func waiting(format string, args ...any) outcome {
	return outcome{message: fmt.Sprintf(format, args...)}
}

// answerAwaited is waiting for an answer that comes within moments.
func answerAwaited(format string, args ...any) outcome {
	out := waiting(format, args...)
	out.answerAwaited = true
	return out
}

func completed(format string, args ...any) outcome {
	return outcome{done: true, message: fmt.Sprintf(format, args...)}
}

// failure is an error no retry can fix: the request fails with its reason and message.
type failure struct{ reason, message string }

func (f *failure) Error() string { return f.message }

func fatal(reason, format string, args ...any) error {
	return &failure{reason: reason, message: fmt.Sprintf(format, args...)}
}

// progress runs the steps of a Progressing request from the first one not yet done, as
// far as they go in this sync, changing the status in memory only: the sync writes it once.
// Every return carries a recheck no later than the running step's deadline, errors
// included, so spec.timeout fires on time whatever the retry backoff.
//
// planned says the plan was made in this sync and is not stored yet: the sync then goes no
// further than the pause, so the plan is stored before PostgreSQL changes (cleanup after a
// crash rolls forward from it).
func (c *Controller) progress(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, planned bool) (syncResult, error) {
	if req.Status.RotateAuth == nil {
		// A request started by an earlier version of the ops-manager: plan it now.
		plan, err := c.planRotation(ctx, req)
		if err != nil {
			return c.failOrRetry(ctx, req, err, syncResult{})
		}
		req.Status.RotateAuth = plan
		planned = true
	}
	pg, err := c.postgreses.Postgreses(req.Namespace).Get(req.Spec.DatabaseRef.Name)
	if apierrors.IsNotFound(err) {
		pg, err = c.liveDatabase(ctx, req)
	} else if err == nil && pg.UID != req.Status.RotateAuth.DatabaseUID {
		pg, err = c.liveDatabase(ctx, req)
	}
	if err != nil {
		return c.failOrRetry(ctx, req, err, syncResult{requeueAfter: time.Second})
	}
	r := &rotation{req: req, pg: pg.DeepCopy(), now: c.clock.Now()}
	timeout := stepTimeout(req)

	for _, s := range rotateAuthSteps {
		if isTrue(req.Status.Conditions, s.condition) {
			continue
		}
		if meta.FindStatusCondition(req.Status.Conditions, s.condition) == nil {
			setCondition(&req.Status.Conditions, s.condition, metav1.ConditionFalse, ReasonInProgress, s.starting, req.Generation, r.now)
		}
		cond := meta.FindStatusCondition(req.Status.Conditions, s.condition)
		elapsed := r.now.Sub(cond.LastTransitionTime.Time)
		if elapsed > timeout {
			c.fail(ctx, req, "StepTimedOut", fmt.Sprintf("step %s did not finish within %s: %s", s.condition, timeout, cond.Message))
			return syncResult{}, nil
		}
		// Informers wake the request when what it waits for changes; this recheck makes
		// sure the timeout fires.
		deadline := syncResult{requeueAfter: timeout - elapsed + time.Second}

		// PauseDatabase takes the pause and ResumeDatabase gives it back (perhaps in an
		// earlier sync whose status write was lost): neither needs to hold it.
		if s.condition != ConditionPauseDatabase && s.condition != ConditionResumeDatabase {
			err := c.checkPauseHeld(ctx, r)
			if errors.Is(err, errAlreadyResumed) {
				setCondition(&req.Status.Conditions, s.condition, metav1.ConditionTrue, ReasonCompleted,
					"completed before the database was resumed, in a sync whose status write was lost", req.Generation, r.now)
				continue
			}
			if err != nil {
				return c.failOrRetry(ctx, req, err, deadline)
			}
		}
		out, err := s.run(c, ctx, r)
		var permanent *failure
		if errors.As(err, &permanent) {
			c.fail(ctx, req, permanent.reason, fmt.Sprintf("%s: %s", s.condition, permanent.message))
			return syncResult{}, nil
		}
		// The step may have recorded progress of its own (a new reason) on the way.
		cond = meta.FindStatusCondition(req.Status.Conditions, s.condition)
		if err != nil {
			// Transient: say so on the condition, then retry with backoff, and look again at
			// the deadline at the latest.
			setCondition(&req.Status.Conditions, s.condition, metav1.ConditionFalse, cond.Reason, "retrying: "+err.Error(), req.Generation, r.now)
			return deadline, err
		}
		if !out.done {
			setCondition(&req.Status.Conditions, s.condition, metav1.ConditionFalse, cond.Reason, out.message, req.Generation, r.now)
			if out.recheckAfter > 0 && out.recheckAfter < deadline.requeueAfter {
				deadline.requeueAfter = out.recheckAfter
			}
			deadline.answerAwaited = out.answerAwaited
			return deadline, nil
		}
		setCondition(&req.Status.Conditions, s.condition, metav1.ConditionTrue, ReasonCompleted, out.message, req.Generation, r.now)
		c.recorder.Event(req, corev1.EventTypeNormal, s.condition, out.message)
		if planned {
			// Store the plan first; the status write wakes the next sync.
			return syncResult{requeueAfter: time.Second}, nil
		}
	}

	req.Status.Phase = opsv1alpha1.OpsRequestPhaseSuccessful
	setCondition(&req.Status.Conditions, ConditionSuccessful, metav1.ConditionTrue, ReasonCompleted,
		fmt.Sprintf("rotated the credential of Postgres %s/%s", req.Namespace, r.pg.Name), req.Generation, r.now)
	return syncResult{}, nil
}

// failOrRetry ends the request when err is a failure no retry can fix, else returns err for
// a retry with res's recheck.
func (c *Controller) failOrRetry(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, err error, res syncResult) (syncResult, error) {
	var permanent *failure
	if errors.As(err, &permanent) {
		c.fail(ctx, req, permanent.reason, permanent.message)
		return syncResult{}, nil
	}
	return res, err
}
