package opsmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// syncResult asks for the request to be looked at again after a delay, for what no
// informer reports (a step's timeout, replication catching up).
type syncResult struct {
	requeueAfter time.Duration
	// answerAwaited says the sync stopped only to wait for another controller's answer,
	// which comes within moments: its status write may wait for the next sync.
	answerAwaited bool
}

// syncHandler moves one request along. Every decision is taken from the request's
// persisted status and the cluster's current state, so it can run any number of times,
// on any replica, after any crash.
//
// The status is written once per sync, after every step that could complete in it (see
// docs/architecture.md, "Write budget"). No step needs its own progress durable before its
// next action: each one checks the cluster live before it acts, and cleanUp decides from
// the staged Secret and PostgreSQL, never from a condition that may not have been written.
func (c *Controller) syncHandler(ctx context.Context, key cache.ObjectName) (syncResult, error) {
	stored, err := c.currentRequest(key)
	if apierrors.IsNotFound(err) {
		return syncResult{}, nil
	}
	if err != nil {
		return syncResult{}, err
	}
	if stored.DeletionTimestamp != nil || stored.Status.Phase.Ended() {
		c.unwritten.drop(key)
		return c.cleanUp(ctx, stored)
	}

	before := *stored.Status.DeepCopy()
	req := c.unwritten.resume(stored)
	res, err := c.advance(ctx, req)
	// A status is kept back only once the stored request has its plan: a later sync may
	// change PostgreSQL, and cleanup after a crash needs the stored plan to roll forward.
	if err == nil && res.answerAwaited && planStored(stored) {
		if wait, held := c.unwritten.hold(req, c.clock.Now()); held {
			res.requeueAfter = min(res.requeueAfter, wait)
			return res, nil
		}
	}
	c.unwritten.drop(key)
	if werr := c.writeStatusInPlace(ctx, before, req); werr != nil {
		return res, errors.Join(err, werr)
	}
	if err != nil || !req.Status.Phase.Ended() {
		return res, err
	}
	c.announceEnd(req)
	return c.cleanUp(ctx, req)
}

// planStored tells whether the stored request is Progressing with its plan: from then on,
// a crash leaves cleanup what it needs to roll forward (docs/architecture.md, "Write
// budget").
func planStored(stored *opsv1alpha1.PostgresOpsRequest) bool {
	return stored.Status.Phase == opsv1alpha1.OpsRequestPhaseProgressing && stored.Status.RotateAuth != nil
}

// advance takes a live request as far as it can go in this sync, changing only its status
// in memory: admitted, scheduled, then its steps.
func (c *Controller) advance(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (syncResult, error) {
	if req.Status.Phase == "" {
		if err := c.admit(ctx, req); err != nil {
			return syncResult{}, err
		}
	}
	planned := false
	if req.Status.Phase == opsv1alpha1.OpsRequestPhasePending {
		res, err := c.schedule(ctx, req)
		if err != nil || req.Status.Phase != opsv1alpha1.OpsRequestPhaseProgressing {
			return res, err
		}
		planned = true
	}
	return c.progress(ctx, req, planned)
}

// admit adds the finalizer, then makes a new request Pending.
func (c *Controller) admit(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	if !hasFinalizer(req) {
		updated, err := c.patchFinalizers(ctx, req, append(req.Finalizers, Finalizer))
		if err != nil {
			return fmt.Errorf("adding finalizer: %w", err)
		}
		*req = *updated
	}
	req.Status.Phase = opsv1alpha1.OpsRequestPhasePending
	setCondition(&req.Status.Conditions, ConditionPending, metav1.ConditionTrue, "Admitted",
		"the request is queued", req.Generation, c.clock.Now())
	return nil
}

// announceEnd tells, once the ended status is stored, how the request ended: an event with
// the final condition's message, and the ended-requests metric.
func (c *Controller) announceEnd(req *opsv1alpha1.PostgresOpsRequest) {
	if cond := endCondition(req); cond != nil {
		typ := corev1.EventTypeNormal
		if cond.Type == ConditionFailed {
			typ = corev1.EventTypeWarning
		}
		c.recorder.Event(req, typ, cond.Type, cond.Message)
	}
	recordEnded(req)
}

// endCondition is the condition named after an ended request's phase (Successful, Failed or
// Skipped), nil while the request runs.
func endCondition(req *opsv1alpha1.PostgresOpsRequest) *metav1.Condition {
	if !req.Status.Phase.Ended() {
		return nil
	}
	return meta.FindStatusCondition(req.Status.Conditions, req.Status.Phase.EndCondition())
}

func hasFinalizer(req *opsv1alpha1.PostgresOpsRequest) bool {
	for _, f := range req.Finalizers {
		if f == Finalizer {
			return true
		}
	}
	return false
}

// patchFinalizers sets the request's finalizers with a merge patch guarded by its
// resourceVersion. A patch, not an Update: re-encoding the spec (a timeout of "5m" comes
// back as "5m0s") would trip the CEL rule that keeps the spec immutable.
func (c *Controller) patchFinalizers(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, finalizers []string) (*opsv1alpha1.PostgresOpsRequest, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": finalizers, "resourceVersion": req.ResourceVersion,
	}})
	if err != nil {
		return nil, err
	}
	updated, err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(req.Namespace).Patch(ctx, req.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, err
	}
	c.written.Remember(req.ResourceVersion, updated)
	return updated, nil
}

// writeStatusInPlace persists req's status through the status subresource unless it equals
// before's, and makes req the stored object, so the next write (a finalizer patch guarded by
// resourceVersion) does not conflict with this one.
func (c *Controller) writeStatusInPlace(ctx context.Context, before opsv1alpha1.OpsRequestStatus, req *opsv1alpha1.PostgresOpsRequest) error {
	req.Status.ObservedGeneration = req.Generation
	if apiequality.Semantic.DeepEqual(before, req.Status) {
		return nil
	}
	updated, err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(req.Namespace).UpdateStatus(ctx, req,
		metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	c.written.Remember(req.ResourceVersion, updated)
	*req = *updated
	return nil
}

// fail ends the request as Failed with a message a user can act on, in memory; the sync
// writes it. The database is resumed and its credential checked by cleanUp.
func (c *Controller) fail(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, reason, message string) {
	klog.FromContext(ctx).Info("Request failed", "reason", reason, "message", message)
	req.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	setCondition(&req.Status.Conditions, ConditionFailed, metav1.ConditionTrue, reason, message, req.Generation, c.clock.Now())
}

// stepTimeout is spec.timeout, or the default.
func stepTimeout(req *opsv1alpha1.PostgresOpsRequest) time.Duration {
	if req.Spec.Timeout != nil && req.Spec.Timeout.Duration > 0 {
		return req.Spec.Timeout.Duration
	}
	return DefaultStepTimeout
}
