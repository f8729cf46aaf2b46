package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConditionPauseDatabase is the condition of a request's PauseDatabase step (KubeDB's name).
const ConditionPauseDatabase = "PauseDatabase"

// AsksForPause tells whether req asks for its database to be paused: it runs, its plan is
// stored (naming the database by UID in status.rotateAuth.databaseUID), and its
// PauseDatabase step has started and not completed. The ask is the request's own status,
// written with its plan: the provisioner, the only writer of a pause, answers it on the
// Postgres (status.pausedBy and the Paused condition). So a database is never paused for a
// request whose plan is not durable, and the ops-manager writes nothing to ask.
//
// A cache that shows an older status of the request may show an ask that is over: the
// provisioner grants a request its pause once (status.pausedBy keeps naming the request
// that released it), so such an ask pauses nothing.
func (req *PostgresOpsRequest) AsksForPause() bool {
	if req.DeletionTimestamp != nil || req.Status.Phase != OpsRequestPhaseProgressing || req.Status.RotateAuth == nil {
		return false
	}
	cond := meta.FindStatusCondition(req.Status.Conditions, ConditionPauseDatabase)
	return cond != nil && cond.Status != metav1.ConditionTrue
}
