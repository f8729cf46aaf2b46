package operator

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

func TestFlagsAndValidation(t *testing.T) {
	opts := NewOptions("pgops-test")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	opts.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--namespace=demo", "--workers=3", "--leader-elect=false"}))
	assert.Equal(t, "demo", opts.InformerNamespace())
	assert.Equal(t, 3, opts.Workers)
	assert.NoError(t, opts.Validate())

	opts.Workers = 0
	assert.ErrorContains(t, opts.Validate(), "--workers must be at least 1")

	opts = NewOptions("pgops-test")
	opts.RenewDeadline = opts.LeaseDuration + time.Second
	assert.ErrorContains(t, opts.Validate(), "lease-duration > renew-deadline > retry-period")
}

func TestReadinessFollowsCacheSync(t *testing.T) {
	h := &Health{}
	get := func(handler http.HandlerFunc) int {
		rec := httptest.NewRecorder()
		handler(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code
	}
	assert.Equal(t, http.StatusOK, get(h.healthz))
	assert.Equal(t, http.StatusServiceUnavailable, get(h.readyz))
	h.SetReady()
	assert.Equal(t, http.StatusOK, get(h.readyz))
}

func TestStripManagedFields(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{
		Name: "pg", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
	}}
	out, err := StripManagedFields(sts)
	require.NoError(t, err)
	assert.Empty(t, out.(*appsv1.StatefulSet).ManagedFields)

	tombstone := cache.DeletedFinalStateUnknown{Key: "ns/pg", Obj: sts}
	out, err = StripManagedFields(tombstone)
	require.NoError(t, err)
	assert.Equal(t, tombstone, out)
}

func TestMetricsIncludeNamedWorkqueues(t *testing.T) {
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "pgops_test_queue"})
	defer queue.ShutDown()
	queue.Add("item")

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Contains(t, rec.Body.String(), `workqueue_adds_total{name="pgops_test_queue"} 1`)
	assert.Contains(t, rec.Body.String(), `workqueue_depth{name="pgops_test_queue"} 1`)
}

func TestStandbyReplicaIsReady(t *testing.T) {
	h := &Health{}
	h.standby.Store(true)
	rec := httptest.NewRecorder()
	h.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusOK, rec.Code, "a replica waiting for the Lease does not block a rollout")
	h.standby.Store(false)
	rec = httptest.NewRecorder()
	h.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "a new leader is ready only once its caches sync")
}
