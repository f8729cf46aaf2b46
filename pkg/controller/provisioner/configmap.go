package provisioner

import (
	"context"
	_ "embed"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// EntrypointScript is the database container's entrypoint, mounted from "<name>-scripts".
//
//go:embed entrypoint.sh
var EntrypointScript string

func desiredConfigMap(pg *kubedbv1.Postgres) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:            scriptsConfigMapName(pg),
			Namespace:       pg.Namespace,
			Labels:          ownedLabels(pg),
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Data: map[string]string{ScriptsKey: EntrypointScript},
	}
}

// ensureConfigMap creates or updates "<name>-scripts".
func (c *Controller) ensureConfigMap(ctx context.Context, pg *kubedbv1.Postgres) error {
	want := desiredConfigMap(pg)
	cur, err := c.configMapLister.ConfigMaps(pg.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil || !apierrors.IsAlreadyExists(err) {
			if err != nil {
				return fmt.Errorf("creating configmap %s/%s: %w", pg.Namespace, want.Name, err)
			}
			return nil
		}
		cur, err = c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("reading configmap %s/%s: %w", pg.Namespace, want.Name, err)
	}
	if err := c.checkOwned(pg, cur, "ConfigMap"); err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(cur.Data, want.Data) && labelsContain(cur.Labels, want.Labels) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		latest = latest.DeepCopy()
		latest.Labels = mergeMaps(latest.Labels, want.Labels)
		latest.Data = want.Data
		_, err = c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Update(ctx, latest, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
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
