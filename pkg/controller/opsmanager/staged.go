package opsmanager

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
)

// The staged credential is the new credential, kept durable from before PostgreSQL changes
// until the request ends. Its Secret:
//   - is named after the request's UID ("pgops-rotation-<uid>"), so no user Secret, other
//     request or database can collide with it, whatever their names;
//   - is labelled with that UID, and used only when the label matches: a Secret of that name
//     without it is someone else's, and the request fails before PostgreSQL is touched;
//   - has no owner reference, so the garbage collector never deletes it, not even during a
//     foreground deletion of the request;
//   - carries the StagedCredentialFinalizer, so a deletion by anyone leaves it readable
//     until the ops-manager has published the credential and released it.
const (
	// LabelOpsRequestUID on a staged credential names the request it belongs to.
	LabelOpsRequestUID = "ops.kubedb.com/request-uid"
	// AnnotationOpsRequest on a staged credential names the request, for people.
	AnnotationOpsRequest = "ops.kubedb.com/request"
	// StagedCredentialFinalizer keeps a staged credential until its request releases it.
	StagedCredentialFinalizer = "ops.kubedb.com/staged-credential"

	stagedSecretPrefix = "pgops-rotation-"
)

func stagedSecretName(req *opsv1alpha1.PostgresOpsRequest) string {
	return stagedSecretPrefix + string(req.UID)
}

func isStagedFor(secret *corev1.Secret, req *opsv1alpha1.PostgresOpsRequest) bool {
	return secret.Labels[LabelOpsRequestUID] == string(req.UID)
}

// stageCredential returns the request's new credential, creating it first if needed: a
// generated password for the current username, or a copy of the user's. It is stored in
// the staged Secret, never in status or events.
//
// A second credential is made only while PostgreSQL provably has neither: before the point
// of no return. Past it, a missing staged Secret is reported, never replaced.
func (c *Controller) stageCredential(ctx context.Context, r *rotation, current basicAuth) (basicAuth, error) {
	plan := r.req.Status.RotateAuth
	secret, err := c.getStaged(ctx, r.req)
	if err != nil {
		return basicAuth{}, err
	}
	if secret != nil {
		return stagedFrom(secret)
	}
	if pastPointOfNoReturn(r.req) {
		return basicAuth{}, fatal(ReasonCredentialLost,
			"the staged credential Secret %s is gone although PostgreSQL may already have it; it was protected by the finalizer %s, "+
				"which someone removed. Log in with the credential you can still use and set it in Secret %s",
			plan.StagedSecret, StagedCredentialFinalizer, plan.TargetSecret)
	}

	var staged basicAuth
	if ref := userSecretRef(r.req); ref != nil {
		pg, err := c.pgopsClient.KubedbV1().Postgreses(r.req.Namespace).Get(ctx, r.req.Spec.DatabaseRef.Name, metav1.GetOptions{})
		if err != nil {
			return basicAuth{}, fmt.Errorf("reading Postgres %s: %w", r.req.Spec.DatabaseRef.Name, err)
		}
		_, recorded, err := c.acceptedCredential(ctx, r.req, plan.DatabaseUID, plan.CurrentSecret)
		if err != nil {
			return basicAuth{}, err
		}
		if staged, err = c.checkUserSecret(ctx, r.req, pg, ref, plan.CurrentSecret, current, recorded); err != nil {
			return basicAuth{}, err
		}
	} else {
		length := c.cfg.PasswordLength
		if length == 0 {
			length = generatedPasswordFallback
		}
		password, err := credential.GeneratePassword(length)
		if err != nil {
			return basicAuth{}, err
		}
		staged = basicAuth{username: current.username, password: password}
	}
	labels := databaseLabels(r.req.Spec.DatabaseRef.Name)
	labels[LabelOpsRequestUID] = string(r.req.UID)
	secret = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        plan.StagedSecret,
			Namespace:   r.req.Namespace,
			Labels:      labels,
			Annotations: map[string]string{AnnotationOpsRequest: r.req.Name},
			Finalizers:  []string{StagedCredentialFinalizer},
		},
		Type: corev1.SecretTypeBasicAuth,
		// The credential it replaces goes with it: after an in-place edit of the auth
		// Secret, this is the only place that says which password RestartNodes must find
		// refused.
		Data: map[string][]byte{
			kubedbv1.AuthUsernameKey:     []byte(staged.username),
			kubedbv1.AuthPasswordKey:     []byte(staged.password),
			kubedbv1.AuthPrevUsernameKey: []byte(current.username),
			kubedbv1.AuthPrevPasswordKey: []byte(current.password),
		},
	}
	_, err = c.kubeClient.CoreV1().Secrets(r.req.Namespace).Create(ctx, secret, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		// Created by an earlier sync whose answer was lost: use what is stored, never a
		// second new password.
		existing, gerr := c.getStaged(ctx, r.req)
		if gerr != nil {
			return basicAuth{}, gerr
		}
		if existing == nil {
			return basicAuth{}, fmt.Errorf("staged credential %s exists but cannot be read yet", plan.StagedSecret)
		}
		return stagedFrom(existing)
	}
	if err != nil {
		return basicAuth{}, fmt.Errorf("staging the new credential: %w", err)
	}
	return staged, nil
}

// getStaged reads the request's staged Secret live; nil when there is none. A Secret of that
// name that is not the request's own is a conflict no retry fixes.
func (c *Controller) getStaged(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (*corev1.Secret, error) {
	name := req.Status.RotateAuth.StagedSecret
	secret, err := c.kubeClient.CoreV1().Secrets(req.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading staged credential %s: %w", name, err)
	}
	if !isStagedFor(secret, req) {
		return nil, fatal(ReasonNameConflict,
			"Secret %s exists and is not this request's staged credential (label %s=%s missing); rename or delete it, then create a new request",
			name, LabelOpsRequestUID, req.UID)
	}
	return secret, nil
}

// stagedPrevious is the credential the staged one replaces, as staged with it; nil when none
// is recorded (staged by an earlier version) or nothing is staged.
func (c *Controller) stagedPrevious(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (*basicAuth, error) {
	secret, err := c.getStaged(ctx, req)
	if err != nil || secret == nil {
		return nil, err
	}
	prev := basicAuth{username: string(secret.Data[kubedbv1.AuthPrevUsernameKey]), password: string(secret.Data[kubedbv1.AuthPrevPasswordKey])}
	if prev.username == "" || prev.password == "" {
		return nil, nil
	}
	return &prev, nil
}

func stagedFrom(secret *corev1.Secret) (basicAuth, error) {
	auth, problem := basicAuthFrom(secret)
	if problem != "" {
		return basicAuth{}, fatal(ReasonSecretInvalid, "staged credential Secret %s %s", secret.Name, problem)
	}
	return auth, nil
}

// releaseStaged removes the staged Secret once the request no longer needs it: its
// finalizer first, then the Secret (only the request's own, by UID).
func (c *Controller) releaseStaged(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	uid, err := c.dropStagedFinalizer(ctx, req)
	if err != nil || uid == "" {
		return err
	}
	err = c.kubeClient.CoreV1().Secrets(req.Namespace).Delete(ctx, req.Status.RotateAuth.StagedSecret,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting the staged credential: %w", err)
	}
	return nil
}

// unguardStaged keeps the staged Secret but removes the request's finalizer from it, for a
// request that goes away while the Secret may hold the only copy of the password
// PostgreSQL has: the Secret outlives the request, its finalizer does not.
func (c *Controller) unguardStaged(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) error {
	_, err := c.dropStagedFinalizer(ctx, req)
	return err
}

// dropStagedFinalizer removes the staged-credential finalizer from the request's staged
// Secret and returns the Secret's UID, or "" when the request staged nothing (or the name
// is someone else's).
func (c *Controller) dropStagedFinalizer(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (types.UID, error) {
	if req.Status.RotateAuth == nil {
		return "", nil
	}
	secrets := c.kubeClient.CoreV1().Secrets(req.Namespace)
	var uid types.UID
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret, err := c.getStaged(ctx, req)
		if err != nil || secret == nil {
			return err
		}
		uid = secret.UID
		kept := withoutFinalizer(secret.Finalizers, StagedCredentialFinalizer)
		if len(kept) == len(secret.Finalizers) {
			return nil
		}
		secret.Finalizers = kept
		_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	var conflict *failure
	switch {
	case errors.As(err, &conflict):
		return "", nil // someone else's Secret: never touch it
	case apierrors.IsNotFound(err):
		return "", nil
	}
	return uid, err
}

func withoutFinalizer(finalizers []string, name string) []string {
	kept := []string{}
	for _, f := range finalizers {
		if f != name {
			kept = append(kept, f)
		}
	}
	return kept
}
