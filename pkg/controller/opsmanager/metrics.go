package opsmanager

import (
	"github.com/prometheus/client_golang/prometheus"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/operator"
)

// requestsEnded counts requests by type and final phase, so alerts can fire on Failed.
var requestsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "pgops_opsrequests_ended_total",
	Help: "PostgresOpsRequests that ended, by type and final phase (Successful, Failed, Skipped).",
}, []string{"type", "phase"})

func init() { operator.Registry.MustRegister(requestsEnded) }

func recordEnded(req *opsv1alpha1.PostgresOpsRequest) {
	requestsEnded.WithLabelValues(string(req.Spec.Type), string(req.Status.Phase)).Inc()
}
