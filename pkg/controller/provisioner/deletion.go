package provisioner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// handleDeletion applies the deletion policy of a Postgres being deleted, then releases the
// finalizer:
//
//   - DoNotTerminate: nothing is removed and the finalizer stays; a Warning event says how to
//     proceed.
//   - Halt and Delete: the StatefulSet, Services and ConfigMap are removed; PVCs and the auth
//     Secret stay (a generated Secret loses its owner reference so the garbage collector keeps
//     it, and a new Postgres of the same name adopts it and its data).
//   - WipeOut: everything the provisioner created goes, PVCs and the generated Secret
//     included. A user's Secret is never deleted.
//
// While a running ops request holds the pause (asked or acknowledged), deletion waits: the
// ops-manager is working on the pods.
func (c *Controller) handleDeletion(ctx context.Context, pg *kubedbv1.Postgres) error {
	if !hasFinalizer(pg) {
		return nil
	}
	logger := klog.FromContext(ctx)
	policy := deletionPolicy(pg)
	if policy == kubedbv1.DeletionPolicyDoNotTerminate {
		logger.Info("Refusing deletion: deletionPolicy is DoNotTerminate")
		c.recorder.Eventf(pg, corev1.EventTypeWarning, ReasonDeletionRefused,
			"deletionPolicy is DoNotTerminate, so the database is kept and the Postgres stays until the policy changes; "+
				"to delete it, set another policy: kubectl patch postgres -n %s %s --type=merge -p '{\"spec\":{\"deletionPolicy\":\"Delete\"}}' "+
				"(Delete and Halt keep PVCs and the auth secret, WipeOut removes them)", pg.Namespace, pg.Name)
		return nil
	}
	if meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) != nil {
		// A requested pause (Unknown) counts too: the ops-manager may be about to work on
		// the pods. A pause whose request is gone or ended is dropped instead.
		held, err := c.pauseHeld(ctx, pg)
		if err != nil {
			return err
		}
		if held {
			logger.Info("Deletion waits for the pause to end")
			c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonDeletionWaitsOnPause,
				"Deletion waits until PostgresOpsRequest %s resumes the database", pg.Status.PausedBy.Name)
			return nil
		}
		if pg, err = c.dropPause(ctx, pg); err != nil {
			return err
		}
	}

	if err := c.deleteOwned(ctx, pg, "StatefulSet", statefulSetName(pg)); err != nil {
		return err
	}
	for _, svc := range []string{primaryServiceName(pg), standbyServiceName(pg), governingServiceName(pg)} {
		if err := c.deleteOwned(ctx, pg, "Service", svc); err != nil {
			return err
		}
	}
	// The shell entrypoint of earlier releases, if a pod still mounted it.
	if err := c.deleteOwned(ctx, pg, "ConfigMap", legacyScriptsConfigMapName(pg)); err != nil {
		return err
	}

	if policy == kubedbv1.DeletionPolicyWipeOut {
		if err := c.deleteGeneratedSecret(ctx, pg); err != nil {
			return err
		}
		if err := c.deleteRecord(ctx, pg); err != nil {
			return err
		}
		if err := c.deletePVCs(ctx, pg); err != nil {
			return err
		}
		c.recorder.Event(pg, corev1.EventTypeNormal, ReasonWipedOut, "Removed the database with its data, its credential record and its generated auth secret")
	} else {
		if err := c.orphanGeneratedSecret(ctx, pg); err != nil {
			return err
		}
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonSecretKept,
			"deletionPolicy is %s: PVCs and the auth secret are kept", policy)
	}

	_, err := c.updatePostgres(ctx, pg, func(p *kubedbv1.Postgres) bool {
		kept := p.Finalizers[:0]
		for _, f := range p.Finalizers {
			if f != Finalizer {
				kept = append(kept, f)
			}
		}
		changed := len(kept) != len(p.Finalizers)
		p.Finalizers = kept
		return changed
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		logger.Info("Released finalizer", "deletionPolicy", policy)
	}
	return err
}

// generatedSecret returns pg's generated Secret, or nil when there is none.
func (c *Controller) generatedSecret(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Secret, error) {
	sec, err := c.kubeClient.CoreV1().Secrets(pg.Namespace).Get(ctx, authSecretName(pg), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !isGeneratedSecret(sec, pg) {
		return nil, nil
	}
	return sec, nil
}

func (c *Controller) deleteGeneratedSecret(ctx context.Context, pg *kubedbv1.Postgres) error {
	return c.deleteSecretIfOurs(ctx, pg, authSecretName(pg), func(sec *corev1.Secret) bool { return isGeneratedSecret(sec, pg) })
}

// deleteSecretIfOurs deletes Secret name when ours proves it is pg's, by its UID as read: a
// Secret of that name that is someone else's, or replaced meanwhile, stays.
func (c *Controller) deleteSecretIfOurs(ctx context.Context, pg *kubedbv1.Postgres, name string, ours func(*corev1.Secret) bool) error {
	secrets := c.kubeClient.CoreV1().Secrets(pg.Namespace)
	sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading secret %s/%s: %w", pg.Namespace, name, err)
	}
	if !ours(sec) {
		return nil
	}
	uid := sec.UID
	err = secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting secret %s/%s: %w", pg.Namespace, name, err)
	}
	return nil
}

// orphanGeneratedSecret removes pg's owner reference from its generated Secret (one an
// earlier version made), so the garbage collector keeps the Secret when the Postgres goes.
func (c *Controller) orphanGeneratedSecret(ctx context.Context, pg *kubedbv1.Postgres) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, err := c.generatedSecret(ctx, pg)
		if err != nil || sec == nil {
			return err
		}
		var refs []metav1.OwnerReference
		for _, r := range sec.OwnerReferences {
			if r.UID != pg.UID {
				refs = append(refs, r)
			}
		}
		if len(refs) == len(sec.OwnerReferences) {
			return nil
		}
		sec = sec.DeepCopy()
		sec.OwnerReferences = refs
		// Without the owner reference, Argo CD's label tracking would take it for an
		// object of its own to prune.
		sec.Annotations = mergeMaps(sec.Annotations, kubedbv1.NeverPrunedAnnotations())
		_, err = c.kubeClient.CoreV1().Secrets(pg.Namespace).Update(ctx, sec, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// deletePVCs removes the data PVCs of pg: those labelled as its own (isDatabasePVC). A PVC
// that only has a name like pg's may be another application's, and stays.
func (c *Controller) deletePVCs(ctx context.Context, pg *kubedbv1.Postgres) error {
	list, err := c.kubeClient.CoreV1().PersistentVolumeClaims(pg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(selectorLabels(pg)).String()})
	if err != nil {
		return fmt.Errorf("listing PVCs in %s: %w", pg.Namespace, err)
	}
	for _, pvc := range list.Items {
		if !isDatabasePVC(&pvc, pg) {
			continue
		}
		uid := pvc.UID
		err := c.kubeClient.CoreV1().PersistentVolumeClaims(pg.Namespace).Delete(ctx, pvc.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting PVC %s/%s: %w", pg.Namespace, pvc.Name, err)
		}
		klog.FromContext(ctx).Info("Deleted PVC", "pvc", klog.KRef(pg.Namespace, pvc.Name))
	}
	return nil
}
