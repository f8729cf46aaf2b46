package opsmanager

import (
	"sync"

	"k8s.io/client-go/tools/cache"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// writtenRequests remembers, per request, what the API server returned for the
// ops-manager's latest write, until the informer's cache has caught up with it. A sync that
// starts before then works on the written object instead of the cache's older copy, so its
// own write never conflicts with the previous one, and it never redoes what that one
// recorded.
//
// A cached object is older than the remembered write exactly when its resourceVersion is
// one the write replaced: the cache only moves forward, so any other resourceVersion is the
// write itself or a later change, and the cache is used again.
type writtenRequests struct {
	mu    sync.Mutex
	byKey map[cache.ObjectName]*writtenRequest
}

type writtenRequest struct {
	// replaced are the resourceVersions this chain of writes started from.
	replaced map[string]bool
	latest   *opsv1alpha1.PostgresOpsRequest
}

// remember records that the object at resourceVersion from was replaced by written.
func (w *writtenRequests) remember(from string, written *opsv1alpha1.PostgresOpsRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey == nil {
		w.byKey = map[cache.ObjectName]*writtenRequest{}
	}
	key := cache.MetaObjectToName(written)
	entry := w.byKey[key]
	if entry == nil || entry.latest.ResourceVersion != from {
		entry = &writtenRequest{replaced: map[string]bool{}}
		w.byKey[key] = entry
	}
	entry.replaced[from] = true
	entry.latest = written
}

// newest returns a copy of cached, or of the ops-manager's own later write of it.
func (w *writtenRequests) newest(key cache.ObjectName, cached *opsv1alpha1.PostgresOpsRequest) *opsv1alpha1.PostgresOpsRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	if entry := w.byKey[key]; entry != nil {
		if entry.replaced[cached.ResourceVersion] {
			return entry.latest.DeepCopy()
		}
		delete(w.byKey, key)
	}
	return cached.DeepCopy()
}

// forget drops what is remembered of a request that is gone.
func (w *writtenRequests) forget(key cache.ObjectName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byKey, key)
}

// currentRequest is the request as the ops-manager last knew it: the cache's copy, or its
// own newer write.
func (c *Controller) currentRequest(key cache.ObjectName) (*opsv1alpha1.PostgresOpsRequest, error) {
	cached, err := c.requests.PostgresOpsRequests(key.Namespace).Get(key.Name)
	if err != nil {
		c.written.forget(key)
		return nil, err
	}
	return c.written.newest(key, cached), nil
}
