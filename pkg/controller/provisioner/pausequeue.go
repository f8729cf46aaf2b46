package provisioner

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// PauseWorkers is how many workers answer pause requests. They only read the request and
// write one condition, so a few keep up with any number of databases.
const PauseWorkers = 2

// The pause fast path: a pause a request asks for in its status (or an earlier ops-manager
// on the Postgres, Paused=Unknown) goes onto its own queue, so its answer never waits
// behind the main queue's health checks of other
// databases. The per-database lock makes the answer wait only for a sync of the same
// database that is under way: once the answer is written, no sync of the provisioner is
// writing that database's workloads or Secret.

// pauseAsked tells whether pg carries a pause request not answered yet.
func pauseAsked(pg *kubedbv1.Postgres) bool {
	cond := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused)
	return pg.Status.PausedBy != nil && cond != nil && cond.Status == metav1.ConditionUnknown
}

// answerPause grants the pause a request asks for on the Postgres called name, or
// acknowledges one asked on the Postgres, if it is still asked for a request that runs.
// Anything else (a pause to drop, a deletion) is the main sync's.
func (c *Controller) answerPause(ctx context.Context, name cache.ObjectName) error {
	unlock := c.locks.lock(name)
	defer unlock()
	cached, err := c.postgresLister.Postgreses(name.Namespace).Get(name.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cached.DeletionTimestamp != nil {
		return nil
	}
	pg := c.written.Newest(cached)
	if pauseAsked(pg) {
		held, err := c.pauseHeld(ctx, pg)
		if err != nil || !held {
			return err
		}
		return c.acknowledgePause(ctx, pg)
	}
	if asker := c.pauseAsker(pg); asker != nil {
		return c.grantPause(ctx, pg, asker)
	}
	return nil
}

func (c *Controller) runPauseWorker(ctx context.Context) {
	for processNext(ctx, c.pauseQueue, c.answerPause) {
	}
}

// workloadLockKey carries a sync's release of its database's lock in its context.
type workloadLockKey struct{}

// withWorkloadLock takes the database's lock for a sync and returns a context from which
// releaseWorkloadLock lets it go early, and the release for the sync's end. Both releases
// may run; the lock is let go once.
func (c *Controller) withWorkloadLock(ctx context.Context, name cache.ObjectName) (context.Context, func()) {
	release := sync.OnceFunc(c.locks.lock(name))
	return context.WithValue(ctx, workloadLockKey{}, release), release
}

// releaseWorkloadLock lets the database's lock go once a sync only observes: its status
// write needs no lock (it re-applies its change on a conflict, and the pause's answer is a
// condition of its own), and a health check that waits on a slow database must not delay
// the answer to a pause.
func releaseWorkloadLock(ctx context.Context) {
	if release, ok := ctx.Value(workloadLockKey{}).(func()); ok {
		release()
	}
}

// keyedLocks is one mutex per database, dropped when no one holds or waits for it.
type keyedLocks struct {
	mu    sync.Mutex
	byKey map[cache.ObjectName]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	users int
}

// lock takes the database's lock and returns its release.
func (k *keyedLocks) lock(key cache.ObjectName) func() {
	k.mu.Lock()
	if k.byKey == nil {
		k.byKey = map[cache.ObjectName]*keyedLock{}
	}
	l := k.byKey[key]
	if l == nil {
		l = &keyedLock{}
		k.byKey[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.byKey, key)
		}
		k.mu.Unlock()
	}
}
