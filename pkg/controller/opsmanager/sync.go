package opsmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// syncResult asks for the request to be looked at again after a delay, for what no
// informer reports (a step's timeout, replication catching up).
type syncResult struct{ requeueAfter time.Duration }

// syncHandler moves one request along. Every decision is taken from the request's
// persisted status and the cluster's current state, so it can run any number of times,
// on any replica, after any crash.
func (c *Controller) syncHandler(ctx context.Context, key cache.ObjectName) (syncResult, error) {
	cached, err := c.requests.PostgresOpsRequests(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return syncResult{}, nil
	}
	if err != nil {
		return syncResult{}, err
	}
	req := cached.DeepCopy()

	switch {
	case req.DeletionTimestamp != nil:
		return c.cleanUp(ctx, req)
	case req.Status.Phase == "":
		return syncResult{}, c.admit(ctx, req)
	case req.Status.Phase == opsv1alpha1.OpsRequestPhasePending:
		return c.schedule(ctx, req)
	case req.Status.Phase == opsv1alpha1.OpsRequestPhaseProgressing:
		return c.progress(ctx, req)
	default:
		return c.cleanUp(ctx, req)
	}
}

// admit adds the finalizer, then makes a new request Pending.
func (c *Controller) admit(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	if !hasFinalizer(req) {
		updated, err := c.patchFinalizers(ctx, req, append(req.Finalizers, Finalizer))
		if err != nil {
			return fmt.Errorf("adding finalizer: %w", err)
		}
		req = updated
	}
	req.Status.Phase = opsv1alpha1.OpsRequestPhasePending
	setCondition(&req.Status.Conditions, ConditionPending, metav1.ConditionTrue, "Admitted",
		"the request is queued", req.Generation, c.clock.Now())
	_, err := c.writeStatus(ctx, req)
	return err
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
	return c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(req.Namespace).Patch(ctx, req.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
}

// writeStatus persists req's status through the status subresource.
func (c *Controller) writeStatus(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (*opsv1alpha1.PostgresOpsRequest, error) {
	req.Status.ObservedGeneration = req.Generation
	updated, err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(req.Namespace).UpdateStatus(ctx, req,
		metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, fmt.Errorf("writing status: %w", err)
	}
	return updated, nil
}

// writeStatusIfChanged persists req's status unless it equals before's.
func (c *Controller) writeStatusIfChanged(ctx context.Context, before opsv1alpha1.OpsRequestStatus, req *opsv1alpha1.PostgresOpsRequest) (*opsv1alpha1.PostgresOpsRequest, error) {
	if apiequality.Semantic.DeepEqual(before, req.Status) {
		return req, nil
	}
	return c.writeStatus(ctx, req)
}

// writeStatusInPlace persists req's status unless it equals before's, and makes req the
// stored object, so the next write (a finalizer patch guarded by resourceVersion) does not
// conflict with this one.
func (c *Controller) writeStatusInPlace(ctx context.Context, before opsv1alpha1.OpsRequestStatus, req *opsv1alpha1.PostgresOpsRequest) error {
	updated, err := c.writeStatusIfChanged(ctx, before, req)
	if err != nil {
		return err
	}
	*req = *updated
	return nil
}

// fail ends the request as Failed with a message a user can act on. The database is
// resumed and its credential checked by cleanUp on the next sync.
func (c *Controller) fail(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, reason, message string) error {
	klog.FromContext(ctx).Info("Request failed", "reason", reason, "message", message)
	req.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	setCondition(&req.Status.Conditions, ConditionFailed, metav1.ConditionTrue, reason, message, req.Generation, c.clock.Now())
	if _, err := c.writeStatus(ctx, req); err != nil {
		return err
	}
	c.recorder.Event(req, corev1.EventTypeWarning, ConditionFailed, message)
	recordEnded(req)
	return nil
}

// stepTimeout is spec.timeout, or the default.
func stepTimeout(req *opsv1alpha1.PostgresOpsRequest) time.Duration {
	if req.Spec.Timeout != nil && req.Spec.Timeout.Duration > 0 {
		return req.Spec.Timeout.Duration
	}
	return DefaultStepTimeout
}
