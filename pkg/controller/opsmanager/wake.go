package opsmanager

import (
	"context"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// A standby whose primary restarted tries it again only every wal_retrieve_retry_interval
// (1 s), so RestartNodes would wait up to a second after the primary is back for each
// standby to stream. Once the ops-manager has logged in to the restarted primary through
// its Service (so the Service routes to it), it wakes each standby that does not stream:
// a configuration reload makes the standby try at once. A standby is woken at most
// maxStandbyWakes times per rotation, standbyWakeSpacing apart; after that its own retry
// takes over, so a standby that cannot stream costs a few log lines, not one per poll.
const (
	maxStandbyWakes    = 3
	standbyWakeSpacing = 300 * time.Millisecond
	// wokenPollInterval is how soon replication is looked at again after a wake: a woken
	// standby streams within milliseconds.
	wokenPollInterval = 50 * time.Millisecond
)

// wakeStandbys wakes the standbys named in missing, as far as their limits allow, and
// tells whether it woke any. Failures are logged, never returned: a standby that cannot
// be woken still retries on its own.
func (c *Controller) wakeStandbys(ctx context.Context, r *rotation, sts *appsv1.StatefulSet, auth basicAuth, missing []string) bool {
	// Only a restarted primary leaves standbys waiting for their retry (a restarted or
	// re-pointed standby connects at once), and Warm standbys accept no login to be woken.
	if !slices.Contains(r.req.Status.RotateAuth.RestartPods, podName(r.req.Spec.DatabaseRef.Name, 0)) ||
		(r.pg != nil && r.pg.Spec.StandbyMode != nil && *r.pg.Spec.StandbyMode == kubedbv1.StandbyModeWarm) {
		return false
	}
	woke := false
	for _, name := range missing {
		if !c.wakes.take(r.req.UID, name, r.now) {
			continue
		}
		target, err := c.podTarget(r.req, sts, name)
		if err != nil {
			continue // not Ready: it connects to the primary as it starts
		}
		target.User, target.Password = auth.username, auth.password
		ok, err := c.db.WakeStandby(ctx, target)
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Could not wake standby; it retries on its own", "pod", name, "err", err)
			continue
		}
		woke = woke || ok
	}
	return woke
}

// standbyWakes counts, per request and standby, the wakes done and when the last was.
type standbyWakes struct {
	mu    sync.Mutex
	byUID map[types.UID]map[string]wakeCount
}

type wakeCount struct {
	n    int
	last time.Time
}

// take tells whether standby name of request uid may be woken at now, and counts it.
func (w *standbyWakes) take(uid types.UID, name string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byUID == nil {
		w.byUID = map[types.UID]map[string]wakeCount{}
	}
	counts := w.byUID[uid]
	if counts == nil {
		counts = map[string]wakeCount{}
		w.byUID[uid] = counts
	}
	wc := counts[name]
	if wc.n >= maxStandbyWakes || (wc.n > 0 && now.Sub(wc.last) < standbyWakeSpacing) {
		return false
	}
	counts[name] = wakeCount{n: wc.n + 1, last: now}
	return true
}

// forget drops the counts of a request that has ended.
func (w *standbyWakes) forget(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byUID, uid)
}

// notStreaming is the standbys of want that streaming does not name.
func notStreaming(want, streaming []string) []string {
	var missing []string
	for _, name := range want {
		if !slices.Contains(streaming, name) {
			missing = append(missing, name)
		}
	}
	return missing
}
