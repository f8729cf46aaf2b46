package operator

import (
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Object is an API object a controller reads from a cache and writes.
type Object interface {
	metav1.Object
	runtime.Object
}

// OwnWrites remembers, per object, what the API server returned for a controller's latest
// write of it, until the informer's cache has caught up. A sync that starts before then
// works on the written object instead of the cache's older copy, so its write never
// conflicts with the previous one, and it never redoes what that one recorded.
//
// A cached object is older than the remembered write exactly when its resourceVersion is
// one the write replaced: a cache only moves forward, so any other resourceVersion is the
// write itself or a later change, and the cache is used again.
type OwnWrites[T Object] struct {
	mu    sync.Mutex
	byKey map[cache.ObjectName]*ownWrite[T]
}

type ownWrite[T Object] struct {
	// replaced are the resourceVersions this chain of writes started from.
	replaced map[string]bool
	latest   T
}

// Remember records that the object at resourceVersion from was replaced by written.
func (w *OwnWrites[T]) Remember(from string, written T) {
	if written.GetResourceVersion() == from {
		return // nothing to tell apart (a fake API server that keeps no resourceVersions)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey == nil {
		w.byKey = map[cache.ObjectName]*ownWrite[T]{}
	}
	key := cache.MetaObjectToName(written)
	entry := w.byKey[key]
	if entry == nil || entry.latest.GetResourceVersion() != from {
		entry = &ownWrite[T]{replaced: map[string]bool{}}
		w.byKey[key] = entry
	}
	entry.replaced[from] = true
	entry.latest = written
}

// Newest returns a deep copy of cached, or of the controller's own later write of it.
func (w *OwnWrites[T]) Newest(cached T) T {
	key := cache.MetaObjectToName(cached)
	w.mu.Lock()
	defer w.mu.Unlock()
	if entry := w.byKey[key]; entry != nil {
		if entry.replaced[cached.GetResourceVersion()] {
			return entry.latest.DeepCopyObject().(T)
		}
		delete(w.byKey, key)
	}
	return cached.DeepCopyObject().(T)
}

// Forget drops what is remembered of an object that is gone.
func (w *OwnWrites[T]) Forget(key cache.ObjectName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byKey, key)
}
