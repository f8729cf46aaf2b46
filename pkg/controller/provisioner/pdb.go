package provisioner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func podDisruptionBudgetName(pg *kubedbv1.Postgres) string { return pg.Name }

// desiredPodDisruptionBudget lets one pod of pg be evicted at a time: a node drain (and a
// RotateAuth, whose restarts are evictions) never takes the primary and a standby, or two
// standbys, down together.
func desiredPodDisruptionBudget(pg *kubedbv1.Postgres) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{
			Name:            podDisruptionBudgetName(pg),
			Namespace:       pg.Namespace,
			Labels:          ownedLabels(pg),
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(pg)},
			// A pod that is not Ready serves nobody: evicting it never costs availability,
			// and refusing would leave a drain (or a rotation) stuck behind a broken pod.
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// ensurePodDisruptionBudget keeps a PodDisruptionBudget while pg has more than one replica
// and removes it otherwise: with one replica, maxUnavailable 1 protects nothing, and
// maxUnavailable 0 would block every drain.
func (c *Controller) ensurePodDisruptionBudget(ctx context.Context, pg *kubedbv1.Postgres) error {
	name := podDisruptionBudgetName(pg)
	if replicas(pg) <= 1 {
		return c.deleteOwned(ctx, pg, "PodDisruptionBudget", name)
	}
	want := desiredPodDisruptionBudget(pg)
	cur, err := c.pdbLister.PodDisruptionBudgets(pg.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		_, err = c.kubeClient.PolicyV1().PodDisruptionBudgets(pg.Namespace).Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil {
			klog.FromContext(ctx).Info("Created poddisruptionbudget", "poddisruptionbudget", klog.KObj(want))
			c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonPodDisruptionBudgetCreated, "Created poddisruptionbudget %s (maxUnavailable 1)", name)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating poddisruptionbudget %s/%s: %w", pg.Namespace, name, err)
		}
		cur, err = c.kubeClient.PolicyV1().PodDisruptionBudgets(pg.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("reading poddisruptionbudget %s/%s: %w", pg.Namespace, name, err)
	}
	if !isOwnedBy(cur, pg) {
		// Somebody's own budget for these pods, perhaps from before pgops made one: it
		// protects them too, so it is left alone and provisioning goes on.
		c.recorder.Eventf(pg, corev1.EventTypeWarning, ReasonObjectConflict,
			"PodDisruptionBudget %s/%s exists and is not controlled by this Postgres; it is left as it is", pg.Namespace, name)
		return nil
	}
	if equality.Semantic.DeepEqual(cur.Spec, want.Spec) && labelsContain(cur.Labels, want.Labels) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.kubeClient.PolicyV1().PodDisruptionBudgets(pg.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		latest = latest.DeepCopy()
		latest.Labels = mergeMaps(latest.Labels, want.Labels)
		latest.Spec = want.Spec
		_, err = c.kubeClient.PolicyV1().PodDisruptionBudgets(pg.Namespace).Update(ctx, latest, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}
