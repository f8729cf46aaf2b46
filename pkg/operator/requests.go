package operator

import opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"

// RequestStageChanged tells whether an informer's update of an ops request can change what
// a controller does about the request's database, beyond the request itself: its phase
// changed, it is being deleted, or its finalizers (which hold the database during cleanup)
// changed. A request's progress (its conditions) does not. Objects of another type count as
// changed.
func RequestStageChanged(oldObj, newObj interface{}) bool {
	old, ok1 := oldObj.(*opsv1alpha1.PostgresOpsRequest)
	req, ok2 := newObj.(*opsv1alpha1.PostgresOpsRequest)
	if !ok1 || !ok2 {
		return true
	}
	return old.Status.Phase != req.Status.Phase || req.DeletionTimestamp != nil || len(old.Finalizers) != len(req.Finalizers)
}
