package opsmanager

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// The credential record (pkg/apis/kubedb/v1/record.go) keeps the credential PostgreSQL
// accepts; the pods boot from it. A rotation logs in with it, and writes the new credential
// into it as soon as PostgreSQL accepts that, before any Secret a user or another actor may
// change: from then on the password PostgreSQL has is never only in a Secret someone else
// can overwrite, and every pod that starts gets it.

// plannedRecord reads the planned database's credential record live; nil when it has none
// (a database a provisioner before the record made, until its next sync), or the Secret of
// that name is not the planned database's record.
func (c *Controller) plannedRecord(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, databaseUID types.UID) (*corev1.Secret, error) {
	name := kubedbv1.CredentialRecordName(req.Spec.DatabaseRef.Name)
	rec, err := c.kubeClient.CoreV1().Secrets(req.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading credential record %s: %w", name, err)
	}
	if !kubedbv1.IsCredentialRecordOf(rec, req.Spec.DatabaseRef.Name) || rec.Annotations[kubedbv1.RecordDatabaseUIDAnnotation] != string(databaseUID) {
		return nil, nil
	}
	return rec, nil
}

// acceptedCredential is the credential PostgreSQL accepts as far as pgops knows: the
// record's, else (no record yet) the one in Secret fallback.
func (c *Controller) acceptedCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, databaseUID types.UID, fallback string) (basicAuth, bool, error) {
	rec, err := c.plannedRecord(ctx, req, databaseUID)
	if err != nil {
		return basicAuth{}, false, err
	}
	if rec != nil {
		auth, problem := basicAuthFrom(rec)
		if problem != "" {
			return basicAuth{}, false, fatal(ReasonSecretInvalid, "credential record %s %s", rec.Name, problem)
		}
		return auth, true, nil
	}
	auth, _, err := c.readCredential(ctx, req.Namespace, fallback)
	return auth, false, err
}

// recordAccepted writes auth into the planned database's credential record, once PostgreSQL
// accepts it, and tells whether a record now holds it. A database without a record gets none
// here (the provisioner creates it from the Secret the rotation publishes next); a record of
// a replaced database is not touched.
func (c *Controller) recordAccepted(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, auth basicAuth) (held bool, err error) {
	secrets := c.kubeClient.CoreV1().Secrets(req.Namespace)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rec, err := c.plannedRecord(ctx, req, req.Status.RotateAuth.DatabaseUID)
		if err != nil || rec == nil {
			return err
		}
		if current, _ := basicAuthFrom(rec); current != auth {
			rec.Data = map[string][]byte{kubedbv1.AuthUsernameKey: []byte(auth.username), kubedbv1.AuthPasswordKey: []byte(auth.password)}
			if _, err := secrets.Update(ctx, rec, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
				return fmt.Errorf("recording the new credential in %s: %w", rec.Name, err)
			}
		}
		held = true
		return nil
	})
	return held && err == nil, err
}

// recordHolds tells whether the planned database's credential record holds auth.
func (c *Controller) recordHolds(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, auth basicAuth) (bool, error) {
	rec, err := c.plannedRecord(ctx, req, req.Status.RotateAuth.DatabaseUID)
	if err != nil || rec == nil {
		return false, err
	}
	held, _ := basicAuthFrom(rec)
	return held == auth, nil
}

// podSecret is the Secret the pods' template takes the credential from: the credential
// record, or, for a database without one yet, the rotation's target Secret.
func (c *Controller) podSecret(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (string, error) {
	rec, err := c.plannedRecord(ctx, req, req.Status.RotateAuth.DatabaseUID)
	if err != nil {
		return "", err
	}
	if rec != nil {
		return rec.Name, nil
	}
	return req.Status.RotateAuth.TargetSecret, nil
}

// appliesSecretEdit tells whether the request applies an in-place edit of the database's
// auth Secret: its user Secret is the current one. The Secret is then the user's word, never
// written by the rotation.
func appliesSecretEdit(req *opsv1alpha1.PostgresOpsRequest) bool {
	ref := userSecretRef(req)
	return ref != nil && req.Status.RotateAuth != nil && ref.Name == req.Status.RotateAuth.CurrentSecret
}
