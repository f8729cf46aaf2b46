package opsmanager

import (
	"k8s.io/client-go/tools/cache"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// currentRequest is the request as the ops-manager last knew it: the cache's copy, or its
// own newer write (operator.OwnWrites).
func (c *Controller) currentRequest(key cache.ObjectName) (*opsv1alpha1.PostgresOpsRequest, error) {
	cached, err := c.requests.PostgresOpsRequests(key.Namespace).Get(key.Name)
	if err != nil {
		c.written.Forget(key)
		return nil, err
	}
	return c.written.Newest(cached), nil
}
