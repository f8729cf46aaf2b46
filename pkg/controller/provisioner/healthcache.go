package provisioner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// healthTTL is how long a database's SQL check answers for the syncs that follow it, while
// nothing the check depends on has changed: the credential, the primary Service, the pods
// and their readiness. A rotation wakes a database's sync a dozen times within a second or
// two (the pause, the Secret, the template, the request's phases); each would otherwise log
// in to the primary again. A change of any of those inputs checks again at once, and the
// status period always does.
const healthTTL = 2 * time.Second

// healthCheck is what one SQL check found.
type healthCheck struct {
	primaryErr error
	// replication is what the primary says of its standbys (when asked); replicationErr
	// says why that is unknown.
	replication    ReplicationReport
	replicationErr error
	asked          bool
}

type cachedHealth struct {
	inputs string
	at     time.Time
	check  healthCheck
}

// healthCache holds each database's latest SQL check.
type healthCache struct {
	mu     sync.Mutex
	byName map[cache.ObjectName]cachedHealth
}

// checkHealth logs in to the primary (and, when askReplication, applies the synchronous
// settings and reads replication), unless a check of the same inputs is younger than
// healthTTL.
func (c *Controller) checkHealth(ctx context.Context, pg *kubedbv1.Postgres, ep PrimaryEndpoint, pods []*corev1.Pod, askReplication bool) healthCheck {
	name := cache.MetaObjectToName(pg)
	inputs := healthInputs(pg.UID, ep, pods, askReplication)
	now := c.now()
	c.healthChecks.mu.Lock()
	cached, ok := c.healthChecks.byName[name]
	c.healthChecks.mu.Unlock()
	if ok && cached.inputs == inputs && now.Sub(cached.at) < healthTTL && !now.Before(cached.at) {
		return cached.check
	}
	var check healthCheck
	check.primaryErr = c.health.CheckPrimary(ctx, ep)
	if check.primaryErr == nil && askReplication {
		check.asked = true
		check.replication, check.replicationErr = c.health.Replication(ctx, ep)
	}
	if check.replication.SettingsChanged {
		// Look again soon, once the primary's standbys show the new settings.
		now = now.Add(-healthTTL)
	}
	c.healthChecks.mu.Lock()
	if c.healthChecks.byName == nil {
		c.healthChecks.byName = map[cache.ObjectName]cachedHealth{}
	}
	c.healthChecks.byName[name] = cachedHealth{inputs: inputs, at: now, check: check}
	c.healthChecks.mu.Unlock()
	return check
}

// lastStreaming names the standbys the database's latest replication check saw streaming;
// known is false when no check has read replication yet.
func (c *Controller) lastStreaming(name cache.ObjectName) (streaming map[string]bool, known bool) {
	c.healthChecks.mu.Lock()
	defer c.healthChecks.mu.Unlock()
	cached, ok := c.healthChecks.byName[name]
	if !ok || !cached.check.asked || cached.check.replicationErr != nil {
		return nil, false
	}
	streaming = map[string]bool{}
	for _, s := range cached.check.replication.Standbys {
		streaming[s.Name] = true
	}
	return streaming, true
}

// forgetHealth drops a deleted database's check.
func (c *Controller) forgetHealth(name cache.ObjectName) {
	c.healthChecks.mu.Lock()
	defer c.healthChecks.mu.Unlock()
	delete(c.healthChecks.byName, name)
}

// healthInputs fingerprints what a check depends on. The password enters only as a hash,
// and the fingerprint stays in memory.
func healthInputs(uid types.UID, ep PrimaryEndpoint, pods []*corev1.Pod, askReplication bool) string {
	h := sha256.New()
	write := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	write(string(uid))
	write(ep.User)
	write(ep.Password)
	if ep.Service != nil {
		write(string(ep.Service.UID))
		write(ep.Service.Spec.ClusterIP)
	}
	for _, s := range ep.Standbys {
		write(s)
	}
	if s := ep.Synchronous; s != nil {
		write("synchronous " + s.StandbyNames)
		write(s.Commit)
	}
	write(strconv.FormatBool(askReplication))
	states := make([]string, 0, len(pods))
	for _, p := range pods {
		states = append(states, p.Name+"/"+string(p.UID)+"/"+strconv.FormatBool(isPodReady(p)))
	}
	sort.Strings(states)
	for _, s := range states {
		write(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}
