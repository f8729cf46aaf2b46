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
	// streaming names the standbys that stream; streamErr says why that is unknown.
	streaming []string
	streamErr error
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

// checkHealth logs in to the primary (and reads replication when there are standbys),
// unless a check of the same inputs is younger than healthTTL.
func (c *Controller) checkHealth(ctx context.Context, pg *kubedbv1.Postgres, ep PrimaryEndpoint, pods []*corev1.Pod) healthCheck {
	name := cache.MetaObjectToName(pg)
	inputs := healthInputs(pg.UID, ep, pods)
	now := c.now()
	c.healthChecks.mu.Lock()
	cached, ok := c.healthChecks.byName[name]
	c.healthChecks.mu.Unlock()
	if ok && cached.inputs == inputs && now.Sub(cached.at) < healthTTL && !now.Before(cached.at) {
		return cached.check
	}
	var check healthCheck
	check.primaryErr = c.health.CheckPrimary(ctx, ep)
	if check.primaryErr == nil && len(ep.Standbys) > 0 {
		check.streaming, check.streamErr = c.health.StreamingStandbys(ctx, ep)
	}
	c.healthChecks.mu.Lock()
	if c.healthChecks.byName == nil {
		c.healthChecks.byName = map[cache.ObjectName]cachedHealth{}
	}
	c.healthChecks.byName[name] = cachedHealth{inputs: inputs, at: now, check: check}
	c.healthChecks.mu.Unlock()
	return check
}

// forgetHealth drops a deleted database's check.
func (c *Controller) forgetHealth(name cache.ObjectName) {
	c.healthChecks.mu.Lock()
	defer c.healthChecks.mu.Unlock()
	delete(c.healthChecks.byName, name)
}

// healthInputs fingerprints what a check depends on. The password enters only as a hash,
// and the fingerprint stays in memory.
func healthInputs(uid types.UID, ep PrimaryEndpoint, pods []*corev1.Pod) string {
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
