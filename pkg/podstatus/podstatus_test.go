package podstatus

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestReady(t *testing.T) {
	for want, conds := range map[bool][]corev1.PodCondition{
		true:  {{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		false: {{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse}},
	} {
		if got := Ready(&corev1.Pod{Status: corev1.PodStatus{Conditions: conds}}); got != want {
			t.Errorf("Ready(%v) = %v", conds, got)
		}
	}
	if Ready(&corev1.Pod{}) {
		t.Error("a pod without conditions is not Ready")
	}
}
