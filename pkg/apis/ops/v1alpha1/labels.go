package v1alpha1

// Labels on the PostgresOpsRequests the operators create by themselves (a pgops extension).
const (
	// LabelTrigger says why pgops created a request: TriggerScheduled,
	// TriggerAuthSecretChanged or TriggerAuthSecretEdited. Requests without it are the user's.
	LabelTrigger = "ops.kubedb.com/trigger"
	// TriggerScheduled: the credential became older than spec.authSecret.rotateAfter.
	TriggerScheduled = "scheduled"
	// TriggerAuthSecretChanged: spec.authSecret.name was changed to a Secret whose
	// credential PostgreSQL did not accept yet.
	TriggerAuthSecretChanged = "auth-secret-changed"
	// TriggerAuthSecretEdited: the auth Secret was edited in place (by a person, a GitOps
	// tool, a secret operator) to a credential PostgreSQL did not accept yet.
	TriggerAuthSecretEdited = "auth-secret-edited"
	// LabelRotationDue on a scheduled request is when the rotation fell due, in Unix seconds.
	LabelRotationDue = "ops.kubedb.com/rotation-due"
	// LabelRotationAttempt on a scheduled request counts the attempts for its due time, from 1.
	LabelRotationAttempt = "ops.kubedb.com/rotation-attempt"
)

// Condition types of an ops request's final phase (KubeDB's names).
const (
	ConditionSuccessful = "Successful"
	ConditionFailed     = "Failed"
	ConditionSkipped    = "Skipped"
)

// EndCondition is the condition type a request in this final phase carries (its name is
// the phase's), or "" while the request runs.
func (phase OpsRequestPhase) EndCondition() string {
	if !phase.Ended() {
		return ""
	}
	return string(phase)
}

// Ended tells whether phase is final.
func (phase OpsRequestPhase) Ended() bool {
	switch phase {
	case OpsRequestPhaseSuccessful, OpsRequestPhaseFailed, OpsRequestPhaseSkipped:
		return true
	}
	return false
}
