package opsmanager

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/operator"
)

// The alert rules and the dashboard in docs/monitoring must name only metrics the operators
// serve, so a rename cannot silently leave an alert that never fires.

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricName = regexp.MustCompile(`\b(pgops|workqueue|process)_[a-z_]+\b`)
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
)

// servedMetrics is every metric name the two operators can serve.
func servedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	for _, c := range []prometheus.Collector{
		requestsEnded, requestDuration, (&Controller{}).MetricsCollector(), (&provisioner.Controller{}).MetricsCollector(),
	} {
		c.Describe(descs)
	}
	close(descs)
	for d := range descs {
		m := descName.FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		names[m[1]] = true
	}
	// The workqueue and process metrics come from client-go and the Prometheus client; a
	// controller's queue registers its series.
	newWorld(t, 1).newController()
	families, err := operator.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		names[f.GetName()] = true
	}
	return names
}

// baseName maps a histogram's series to the histogram.
func baseName(series string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && base != "pgops_opsrequests_ended" {
			return base
		}
	}
	return series
}

func TestMonitoringAssetsNameOnlyServedMetrics(t *testing.T) {
	served := servedMetrics(t)

	raw, err := os.ReadFile("../../../docs/monitoring/alerts.yaml")
	require.NoError(t, err)
	var rules ruleFile
	require.NoError(t, yaml.UnmarshalStrict(raw, &rules))
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			assert.NotEmpty(t, r.Alert)
			assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
			assert.NotEmpty(t, r.Annotations["description"], r.Alert)
			used := metricName.FindAllString(r.Expr, -1)
			assert.NotEmpty(t, used, r.Alert)
			for _, m := range used {
				assert.True(t, served[baseName(m)], "alert %s uses %s, which no operator serves", r.Alert, m)
			}
		}
	}
	assert.GreaterOrEqual(t, alerts, 3, "rotation failed, credential older than rotateAfter, paused too long")

	raw, err = os.ReadFile("../../../docs/monitoring/grafana-dashboard.json")
	require.NoError(t, err)
	var dash dashboard
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			for _, m := range metricName.FindAllString(target.Expr, -1) {
				assert.True(t, served[baseName(m)], "panel %q uses %s, which no operator serves", p.Title, m)
			}
		}
	}
}
