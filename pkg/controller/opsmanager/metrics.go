package opsmanager

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/operator"
)

// requestsEnded counts requests by type and final phase, so alerts can fire on Failed.
var requestsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "pgops_opsrequests_ended_total",
	Help: "PostgresOpsRequests that ended, by type and final phase (Successful, Failed, Skipped).",
}, []string{"type", "phase"})

// requestDuration is how long requests take, from creation (queueing included: that is what
// the user waits for) to the end.
var requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "pgops_opsrequest_duration_seconds",
	Help:    "Time from a PostgresOpsRequest's creation to its end, by type and final phase (Successful, Failed, Skipped).",
	Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600},
}, []string{"type", "phase"})

func init() {
	operator.Registry.MustRegister(requestsEnded, requestDuration)
	// Every series exists from the start at 0, so the first failure after an operator starts
	// is an increase that alerts see, not a new series that already reads 1.
	for _, phase := range []opsv1alpha1.OpsRequestPhase{
		opsv1alpha1.OpsRequestPhaseSuccessful, opsv1alpha1.OpsRequestPhaseFailed, opsv1alpha1.OpsRequestPhaseSkipped,
	} {
		requestsEnded.WithLabelValues(string(opsv1alpha1.OpsRequestTypeRotateAuth), string(phase))
		requestDuration.WithLabelValues(string(opsv1alpha1.OpsRequestTypeRotateAuth), string(phase))
	}
}

func recordEnded(req *opsv1alpha1.PostgresOpsRequest) {
	requestsEnded.WithLabelValues(string(req.Spec.Type), string(req.Status.Phase)).Inc()
	if end := endCondition(req); end != nil {
		took := end.LastTransitionTime.Sub(req.CreationTimestamp.Time).Seconds()
		requestDuration.WithLabelValues(string(req.Spec.Type), string(req.Status.Phase)).Observe(max(took, 0))
	}
}

// The pause gauges are computed from the caches at each scrape, so a resumed database's
// series end with its pause.
var (
	pausedDesc = prometheus.NewDesc("pgops_postgres_paused_seconds",
		"How long a Postgres has been paused for an ops request: since its Paused condition last changed (asked, then acknowledged).",
		[]string{"namespace", "name", "opsrequest"}, nil)
	pauseTimeoutDesc = prometheus.NewDesc("pgops_postgres_pause_timeout_seconds",
		"The longest the ops request that pauses a Postgres can hold the pause: spec.timeout (the default when unset or gone) "+
			"for each of its steps and for the cleanup after a failure. A longer pause is a stuck pause.",
		[]string{"namespace", "name", "opsrequest"}, nil)
)

// MetricsCollector reports the databases paused by ops requests. Register it while the
// controller runs.
func (c *Controller) MetricsCollector() prometheus.Collector { return pauseMetrics{c} }

type pauseMetrics struct{ c *Controller }

func (m pauseMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- pausedDesc
	ch <- pauseTimeoutDesc
}

func (m pauseMetrics) Collect(ch chan<- prometheus.Metric) {
	pgs, err := m.c.postgreses.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing Postgres for metrics")
		return
	}
	now := m.c.clock.Now()
	for _, pg := range pgs {
		paused := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused)
		if paused == nil || pg.Status.PausedBy == nil {
			continue
		}
		holder := pg.Status.PausedBy.Name
		timeout := DefaultStepTimeout
		if req, err := m.c.requests.PostgresOpsRequests(pg.Namespace).Get(holder); err == nil && req.UID == pg.Status.PausedBy.UID {
			timeout = stepTimeout(req)
		}
		// Each step fails the request at its own deadline, and the cleanup that resumes
		// the database has one more.
		longest := timeout * time.Duration(len(rotateAuthSteps)+1)
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, now.Sub(paused.LastTransitionTime.Time).Seconds(), pg.Namespace, pg.Name, holder)
		ch <- prometheus.MustNewConstMetric(pauseTimeoutDesc, prometheus.GaugeValue, longest.Seconds(), pg.Namespace, pg.Name, holder)
	}
}
