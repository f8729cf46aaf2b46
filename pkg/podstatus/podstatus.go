// Package podstatus reads what a pod's status says, the same way for both operators and
// the plugin.
package podstatus

import corev1 "k8s.io/api/core/v1"

// Ready tells whether pod has the condition Ready=True. It does not look at deletion: a
// terminating pod can still be Ready until the kubelet says otherwise.
func Ready(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
