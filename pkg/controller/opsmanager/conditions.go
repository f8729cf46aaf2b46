package opsmanager

import (
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// Condition types on a PostgresOpsRequest. The step names are KubeDB's; where KubeDB says
// PetSets, pgops says StatefulSets.
const (
	ConditionPending            = "Pending"
	ConditionRotateAuth         = "RotateAuth"
	ConditionPauseDatabase      = opsv1alpha1.ConditionPauseDatabase
	ConditionUpdateCredential   = "UpdateCredential"
	ConditionUpdateStatefulSets = "UpdateStatefulSets"
	ConditionRestartNodes       = "RestartNodes"
	ConditionEvictPod           = "EvictPod"
	ConditionCheckPodReady      = "CheckPodReady"
	// ConditionRepointStandby is per standby given the new credential without a restart
	// (restart mode None; a pgops extension).
	ConditionRepointStandby = "RepointStandby"
	ConditionResumeDatabase = "ResumeDatabase"
	ConditionSuccessful     = opsv1alpha1.ConditionSuccessful
	ConditionFailed         = opsv1alpha1.ConditionFailed
	ConditionSkipped        = opsv1alpha1.ConditionSkipped
)

// Reasons a step's condition carries while it runs.
const (
	ReasonInProgress = "InProgress"
	ReasonCompleted  = "Completed"
	// ReasonDatabaseUpdated marks UpdateCredential after PostgreSQL has the new credential
	// and before the Secrets have it: the window a crash must survive.
	ReasonDatabaseUpdated = "DatabaseUpdated"
)

// perPodCondition names a condition about one pod, as KubeDB does: "EvictPod--pg-1".
func perPodCondition(kind, pod string) string { return kind + "--" + pod }

// setCondition sets a condition and, unlike meta.SetStatusCondition, also restarts its
// LastTransitionTime when the reason changes: a step's timeout counts from the moment it
// started waiting for its current reason. It reports whether anything changed.
func setCondition(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, message string, generation int64, now time.Time) bool {
	existing := meta.FindStatusCondition(*conds, typ)
	if existing != nil && existing.Status == status && existing.Reason == reason &&
		existing.Message == message && existing.ObservedGeneration == generation {
		return false
	}
	transition := metav1.NewTime(now)
	if existing != nil && existing.Status == status && existing.Reason == reason {
		transition = existing.LastTransitionTime
	}
	cond := metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(message),
		ObservedGeneration: generation, LastTransitionTime: transition,
	}
	if existing != nil {
		*existing = cond
	} else {
		*conds = append(*conds, cond)
	}
	return true
}

func isTrue(conds []metav1.Condition, typ string) bool {
	return meta.IsStatusConditionTrue(conds, typ)
}

// truncate keeps a condition message within the API's limit.
func truncate(msg string) string {
	const limit = 4096
	if len(msg) <= limit {
		return msg
	}
	return strings.ToValidUTF8(msg[:limit], "") + "…"
}
