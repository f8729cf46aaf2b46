package provisioner

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// What the provisioner may take over or delete is what it can prove is this database's: an
// object pg controls (its UID in the controller reference), or one carrying pg's KubeDB labels
// (app.kubernetes.io/name: postgreses.kubedb.com, the instance, managed-by). A name alone
// proves nothing: KubeDB names every kind's objects the same way, and users pick names too.

// isDatabasePVC reports whether pvc holds data of the Postgres pg by its labels.
func isDatabasePVC(pvc *corev1.PersistentVolumeClaim, pg *kubedbv1.Postgres) bool {
	return labels.SelectorFromSet(selectorLabels(pg)).Matches(labels.Set(pvc.Labels))
}

// anotherKubeDBObject names the other KubeDB object that obj, found under one of pg's names,
// belongs to ("mysqls.kubedb.com x"), or returns "" when it belongs to none: labelled for
// another KubeDB kind, or controlled by a KubeDB object other than pg.
func anotherKubeDBObject(obj metav1.Object, pg *kubedbv1.Postgres) string {
	l := obj.GetLabels()
	if l[LabelManagedBy] == ManagedByValue && l[LabelName] != "" && l[LabelName] != NameValue {
		return l[LabelName] + " " + l[LabelInstance]
	}
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.UID != pg.UID && isKubeDBGroup(ref.APIVersion) &&
		(ref.Kind != kubedbv1.ResourceKindPostgres || ref.Name != pg.Name) { // not an earlier Postgres of this name
		return ref.Kind + " " + ref.Name
	}
	return ""
}

func isKubeDBGroup(apiVersion string) bool {
	group, _, _ := strings.Cut(apiVersion, "/")
	return group == kubedbv1.SchemeGroupVersion.Group || strings.HasSuffix(group, "."+kubedbv1.SchemeGroupVersion.Group)
}

// checkAuthSecretNotForeign refuses a generated-name auth Secret that belongs to another
// KubeDB database: its credential is that database's, and WipeOut must never delete it.
func checkAuthSecretNotForeign(sec *corev1.Secret, pg *kubedbv1.Postgres) error {
	if owner := anotherKubeDBObject(sec, pg); owner != "" {
		return &userError{reason: ReasonObjectConflict, msg: fmt.Sprintf(
			"Secret %s/%s belongs to %s, not to this Postgres; delete or rename it, or name a Secret of this database in spec.authSecret.name",
			sec.Namespace, sec.Name, owner)}
	}
	return nil
}

// findNameConflict reads live what exists under pg's names before pg holds a finalizer:
// another application's StatefulSet, Service or ConfigMap, another KubeDB database's auth
// Secret, or a Secret under the credential record's name that is not pgops's record. A Postgres that finds one creates nothing, so it needs no finalizer, and its
// deletion policy can never reach what it does not own. The caches hold only labelled
// objects, so these are GETs.
func (c *Controller) findNameConflict(ctx context.Context, pg *kubedbv1.Postgres) error {
	core := c.kubeClient.CoreV1()
	checks := []struct {
		kind string
		get  func() (metav1.Object, error)
	}{
		{"StatefulSet", func() (metav1.Object, error) {
			return c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Get(ctx, statefulSetName(pg), metav1.GetOptions{})
		}},
	}
	for _, name := range []string{primaryServiceName(pg), standbyServiceName(pg), governingServiceName(pg)} {
		checks = append(checks, struct {
			kind string
			get  func() (metav1.Object, error)
		}{"Service", func() (metav1.Object, error) { return core.Services(pg.Namespace).Get(ctx, name, metav1.GetOptions{}) }})
	}
	for _, check := range checks {
		obj, err := check.get()
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s under the name of postgres %s/%s: %w", check.kind, pg.Namespace, pg.Name, err)
		}
		if err := c.checkOwned(pg, obj, check.kind); err != nil {
			return err
		}
	}
	if _, err := c.getRecord(ctx, pg); err != nil {
		return err // a Secret under the credential record's name that is not one
	}
	if pg.Spec.AuthSecret != nil && pg.Spec.AuthSecret.Name != "" && pg.Spec.AuthSecret.Name != authSecretName(pg) {
		return nil
	}
	sec, err := core.Secrets(pg.Namespace).Get(ctx, authSecretName(pg), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading secret %s/%s: %w", pg.Namespace, authSecretName(pg), err)
	}
	return checkAuthSecretNotForeign(sec, pg)
}
