package opsmanager

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// observations is how many durations the histogram holds for typ and phase.
func observations(t *testing.T, typ, phase string) uint64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, requestDuration.WithLabelValues(typ, phase).(prometheus.Metric).Write(&m))
	return m.GetHistogram().GetSampleCount()
}

func TestEndedSeriesExistAtZeroBeforeTheFirstEnd(t *testing.T) {
	for _, phase := range []string{"Successful", "Failed", "Skipped"} {
		_, err := requestsEnded.GetMetricWithLabelValues("RotateAuth", phase)
		require.NoError(t, err)
	}
	assert.Equal(t, 3, testutil.CollectAndCount(requestsEnded), "RotateAuth by Successful, Failed and Skipped, from the start")
}

func TestEndedRotationIsObservedInTheDurationHistogram(t *testing.T) {
	w := newWorld(t, 1)
	before := observations(t, string(opsv1alpha1.OpsRequestTypeRotateAuth), string(opsv1alpha1.OpsRequestPhaseSuccessful))
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 40)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase)
	assert.Equal(t, before+1, observations(t, string(opsv1alpha1.OpsRequestTypeRotateAuth), string(opsv1alpha1.OpsRequestPhaseSuccessful)))
}

// The pause's bound is 3m for each of the five steps and the cleanup: 18m.
func TestPausedDatabaseIsReportedWithItsRequestsTimeout(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: 3 * time.Minute} })
	for i := 0; i < 10 && !meta.IsStatusConditionTrue(w.postgres().Status.Conditions, kubedbv1.ConditionPaused); i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	pg := w.postgres()
	paused := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused)
	require.NotNil(t, paused, "the rotation pauses the database")
	w.clock.SetTime(paused.LastTransitionTime.Add(42 * time.Second))

	want := `
# HELP pgops_postgres_pause_timeout_seconds The longest the ops request that pauses a Postgres can hold the pause: spec.timeout (the default when unset or gone) for each of its steps and for the cleanup after a failure. A longer pause is a stuck pause.
# TYPE pgops_postgres_pause_timeout_seconds gauge
pgops_postgres_pause_timeout_seconds{name="` + pg.Name + `",namespace="` + ns + `",opsrequest="rotate"} 1080
# HELP pgops_postgres_paused_seconds How long a Postgres has been paused for an ops request: since its Paused condition last changed (asked, then acknowledged).
# TYPE pgops_postgres_paused_seconds gauge
pgops_postgres_paused_seconds{name="` + pg.Name + `",namespace="` + ns + `",opsrequest="rotate"} 42
`
	require.NoError(t, testutil.CollectAndCompare(w.newController().MetricsCollector(), strings.NewReader(want)))

	w.runUntilDone("rotate", 40)
	assert.Equal(t, 0, testutil.CollectAndCount(w.newController().MetricsCollector()), "no series once resumed")
}
