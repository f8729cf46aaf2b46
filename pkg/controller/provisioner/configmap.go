package provisioner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// retireEntrypointConfigMap deletes "<name>-scripts", the shell entrypoint that pods of
// earlier releases mount, once nothing can need it: the StatefulSet controller has seen the
// agent template (no new pod will mount it) and no pod of pg mounts it any more (each moved
// to the agent at its restart). A ConfigMap pg does not control is left alone.
func (c *Controller) retireEntrypointConfigMap(ctx context.Context, pg *kubedbv1.Postgres) error {
	name := legacyScriptsConfigMapName(pg)
	cm, err := c.configMapLister.ConfigMaps(pg.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !isOwnedBy(cm, pg) {
		return nil
	}
	sts, err := c.statefulSetLister.StatefulSets(pg.Namespace).Get(statefulSetName(pg))
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && (sts.Status.ObservedGeneration < sts.Generation || mountsConfigMap(&sts.Spec.Template.Spec, name)) {
		return nil
	}
	pods, err := c.podLister.Pods(pg.Namespace).List(labels.SelectorFromSet(selectorLabels(pg)))
	if err != nil {
		return err
	}
	for _, pod := range pods {
		if mountsConfigMap(&pod.Spec, name) {
			return nil
		}
	}
	// The pod cache is a watch of its own: a pod the StatefulSet controller made from the
	// old template just before it observed the new one may not be in it yet.
	live, err := c.kubeClient.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(selectorLabels(pg)).String()})
	if err != nil {
		return fmt.Errorf("listing the pods of %s/%s: %w", pg.Namespace, pg.Name, err)
	}
	for i := range live.Items {
		if mountsConfigMap(&live.Items[i].Spec, name) {
			return nil
		}
	}
	err = c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &cm.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone already, or replaced by another
	}
	if err != nil {
		return fmt.Errorf("deleting configmap %s/%s: %w", pg.Namespace, name, err)
	}
	klog.FromContext(ctx).Info("Deleted the shell entrypoint's configmap: every pod runs the agent", "configmap", klog.KObj(cm))
	return nil
}

// mountsConfigMap tells whether spec has a volume of the ConfigMap name.
func mountsConfigMap(spec *corev1.PodSpec, name string) bool {
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == name {
			return true
		}
	}
	return false
}

// checkOwned refuses to take over an object pg does not control: a user-fixable conflict.
func (c *Controller) checkOwned(pg *kubedbv1.Postgres, obj metav1.Object, kind string) error {
	if isOwnedBy(obj, pg) {
		return nil
	}
	return &userError{reason: ReasonObjectConflict,
		msg: fmt.Sprintf("%s %s/%s exists and is not controlled by this Postgres; delete or rename it", kind, obj.GetNamespace(), obj.GetName())}
}
func labelsContain(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
