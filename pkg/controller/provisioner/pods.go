package provisioner

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/podstatus"
)

// podOrdinal returns the StatefulSet ordinal of pod, or -1 when pod is not one of pg's pods.
func podOrdinal(pg *kubedbv1.Postgres, pod *corev1.Pod) int {
	prefix := statefulSetName(pg) + "-"
	if !strings.HasPrefix(pod.Name, prefix) {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(pod.Name, prefix))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// listPods returns pg's pods from the cache.
func (c *Controller) listPods(pg *kubedbv1.Postgres) ([]*corev1.Pod, error) {
	pods, err := c.podLister.Pods(pg.Namespace).List(labels.SelectorFromSet(selectorLabels(pg)))
	if err != nil {
		return nil, err
	}
	out := pods[:0]
	for _, p := range pods {
		if podOrdinal(pg, p) >= 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// labelPodRoles labels ordinal 0 primary and the others standby, patching only pods whose
// label is wrong.
func (c *Controller) labelPodRoles(ctx context.Context, pg *kubedbv1.Postgres) error {
	pods, err := c.listPods(pg)
	if err != nil {
		return err
	}
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		role := RoleStandby
		if podOrdinal(pg, pod) == 0 {
			role = RolePrimary
		}
		if pod.Labels[LabelRole] == role {
			continue
		}
		patch, _ := json.Marshal(map[string]interface{}{
			"metadata": map[string]interface{}{
				"labels": map[string]string{LabelRole: role},
				// The UID precondition keeps a replacement pod from getting a stale role.
				"uid": string(pod.UID),
			},
		})
		_, err := c.kubeClient.CoreV1().Pods(pg.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: FieldManager})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
			// Gone or replaced meanwhile; the next sync sees the new pod.
			continue
		}
		if err != nil {
			return fmt.Errorf("labelling pod %s/%s as %s: %w", pg.Namespace, pod.Name, role, err)
		}
	}
	return nil
}

func isPodReady(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && podstatus.Ready(pod)
}
