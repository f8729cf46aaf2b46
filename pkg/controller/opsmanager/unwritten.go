package opsmanager

import (
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// maxUnwritten bounds how long a request's status may lag what the ops-manager did: past
// it, the status is written even while an answer is still awaited, so a controller that
// never answers (a StatefulSet controller that is down) shows as what it is within a second.
const maxUnwritten = time.Second

// unwrittenStatus holds, per request, the status of a sync that stopped only to await
// another controller's answer to its own write (the StatefulSet controller's to a new
// template), which comes within moments. The sync that sees the answer continues from it
// and writes both syncs' progress at once: the new credential, the new template and the
// first eviction land in one status write.
//
// Only a request whose plan is stored is kept back (planStored): the plan must be durable
// before PostgreSQL changes, because cleanup after a crash rolls forward from it. Beyond
// the plan nothing kept back is needed for safety: every step checks the cluster live before
// it acts, so an operator that dies with a status unwritten redoes nothing harmful (see
// docs/architecture.md, "Write budget"). It is kept only while the stored request is
// unchanged: a change by anyone (a deletion, a user's edit) drops it.
type unwrittenStatus struct {
	mu    sync.Mutex
	byKey map[cache.ObjectName]unwritten
}

type unwritten struct {
	// basedOn is the resourceVersion of the stored request the status was computed from.
	basedOn string
	since   time.Time
	req     *opsv1alpha1.PostgresOpsRequest
}

// resume returns the request to work on: the status kept back from the previous sync when
// stored is still what it was computed from, else stored itself (a copy).
func (u *unwrittenStatus) resume(stored *opsv1alpha1.PostgresOpsRequest) *opsv1alpha1.PostgresOpsRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	key := cache.MetaObjectToName(stored)
	if kept, ok := u.byKey[key]; ok {
		if kept.basedOn == stored.ResourceVersion && stored.ResourceVersion != "" {
			return kept.req.DeepCopy()
		}
		delete(u.byKey, key)
	}
	return stored.DeepCopy()
}

// hold keeps req's status back unless it has waited maxUnwritten already; it returns how
// long it may wait still.
func (u *unwrittenStatus) hold(req *opsv1alpha1.PostgresOpsRequest, now time.Time) (time.Duration, bool) {
	if req.ResourceVersion == "" {
		return 0, false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byKey == nil {
		u.byKey = map[cache.ObjectName]unwritten{}
	}
	key := cache.MetaObjectToName(req)
	since := now
	if kept, ok := u.byKey[key]; ok && kept.basedOn == req.ResourceVersion {
		since = kept.since
	}
	left := maxUnwritten - now.Sub(since)
	if left <= 0 {
		return 0, false
	}
	u.byKey[key] = unwritten{basedOn: req.ResourceVersion, since: since, req: req.DeepCopy()}
	return left, true
}

func (u *unwrittenStatus) drop(key cache.ObjectName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.byKey, key)
}
