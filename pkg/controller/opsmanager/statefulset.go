package opsmanager

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// updateStatefulSets points the pod template's credential at the database's current auth
// Secret and marks the template with this rotation, so the StatefulSet gets a new
// revision: RestartNodes then recognises restarted pods by that revision.
func (c *Controller) updateStatefulSets(ctx context.Context, r *rotation) (outcome, error) {
	secretName := r.pg.Spec.AuthSecret.Name
	marker := string(r.req.UID)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts, err := c.kubeClient.AppsV1().StatefulSets(r.pg.Namespace).Get(ctx, r.pg.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading StatefulSet %s: %w", r.pg.Name, err)
		}
		if !pointTemplateAt(sts, secretName, marker) {
			return nil
		}
		_, err = c.kubeClient.AppsV1().StatefulSets(sts.Namespace).Update(ctx, sts, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return outcome{}, err
	}
	sts, err := c.statefulSets.StatefulSets(r.pg.Namespace).Get(r.pg.Name)
	if err != nil || sts.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation] != marker || !revisionObserved(sts) {
		return waiting("waiting for the StatefulSet controller to observe the new pod template"), nil
	}
	return completed("StatefulSet %s uses Secret %s (revision %s)", sts.Name, secretName, sts.Status.UpdateRevision), nil
}

// pointTemplateAt sets every credential reference of the template to secretName and the
// rotation marker; it reports whether anything changed.
func pointTemplateAt(sts *appsv1.StatefulSet, secretName, marker string) bool {
	changed := false
	tmpl := &sts.Spec.Template
	if tmpl.Annotations[kubedbv1.AuthRotationAnnotation] != marker {
		if tmpl.Annotations == nil {
			tmpl.Annotations = map[string]string{}
		}
		tmpl.Annotations[kubedbv1.AuthRotationAnnotation] = marker
		changed = true
	}
	for _, containers := range [][]corev1.Container{tmpl.Spec.InitContainers, tmpl.Spec.Containers} {
		for i := range containers {
			for j := range containers[i].Env {
				ref := containers[i].Env[j].ValueFrom
				if ref == nil || ref.SecretKeyRef == nil {
					continue
				}
				switch ref.SecretKeyRef.Key {
				case kubedbv1.AuthUsernameKey, kubedbv1.AuthPasswordKey:
					if ref.SecretKeyRef.Name != secretName {
						ref.SecretKeyRef.Name = secretName
						changed = true
					}
				}
			}
		}
	}
	return changed
}

// revisionObserved is true once the StatefulSet controller has seen the latest spec, so
// status.updateRevision is the revision of the current template.
func revisionObserved(sts *appsv1.StatefulSet) bool {
	return sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != ""
}
