package provisioner

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// The gauges below are computed from the informer caches at each scrape, so nothing is kept
// between scrapes and a deleted database's series end with it. The alert rules in
// docs/monitoring/ are written against these names.
var (
	phaseDesc = prometheus.NewDesc("pgops_postgres_phase",
		"1 for the status.phase each Postgres is in, 0 for the other phases.",
		[]string{"namespace", "name", "phase"}, nil)
	credentialAgeDesc = prometheus.NewDesc("pgops_postgres_credential_age_seconds",
		"How long the credential PostgreSQL accepts has been in use, counted as the rotateAfter schedule counts it: "+
			"from the auth Secret's auth-active-from annotation, else spec.authSecret.activeFrom, else the Secret's creation.",
		[]string{"namespace", "name", "secret"}, nil)
	rotateAfterDesc = prometheus.NewDesc("pgops_postgres_credential_rotate_after_seconds",
		"spec.authSecret.rotateAfter, for databases whose credential pgops rotates on a schedule.",
		[]string{"namespace", "name"}, nil)
)

// phases are every value pgops sets in status.phase, so each database has one series per
// phase and a change of phase never leaves a stale 1 behind.
var phases = []kubedbv1.DatabasePhase{
	kubedbv1.DatabasePhaseProvisioning, kubedbv1.DatabasePhaseReady, kubedbv1.DatabasePhaseCritical,
	kubedbv1.DatabasePhaseNotReady, kubedbv1.DatabasePhaseHalted, kubedbv1.DatabasePhaseUnknown,
}

// MetricsCollector reports each cached Postgres's phase and credential age. Register it
// while the controller runs.
func (c *Controller) MetricsCollector() prometheus.Collector { return databaseMetrics{c} }

type databaseMetrics struct{ c *Controller }

func (m databaseMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- phaseDesc
	ch <- credentialAgeDesc
	ch <- rotateAfterDesc
}

func (m databaseMetrics) Collect(ch chan<- prometheus.Metric) {
	pgs, err := m.c.postgresLister.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing Postgres for metrics")
		return
	}
	now := m.c.now()
	for _, pg := range pgs {
		for _, phase := range phases {
			v := 0.0
			if pg.Status.Phase == phase {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(phaseDesc, prometheus.GaugeValue, v, pg.Namespace, pg.Name, string(phase))
		}
		if name := pg.ActiveAuthSecretName(); name != "" {
			// Only pgops's own Secrets are cached; a user's Secret (not labelled as managed by
			// pgops) has no series, as the schedule never rotates it either.
			if sec, err := m.c.secretLister.Secrets(pg.Namespace).Get(name); err == nil {
				age := now.Sub(credentialSince(pg, sec)).Seconds()
				ch <- prometheus.MustNewConstMetric(credentialAgeDesc, prometheus.GaugeValue, age, pg.Namespace, pg.Name, name)
			}
		}
		if a := pg.Spec.AuthSecret; a != nil && a.RotateAfter != nil && a.RotateAfter.Duration > 0 && !a.ExternallyManaged {
			ch <- prometheus.MustNewConstMetric(rotateAfterDesc, prometheus.GaugeValue, a.RotateAfter.Duration.Seconds(), pg.Namespace, pg.Name)
		}
	}
}
