package opsmanager

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/agent"
	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
)

// planRotation checks the request's input against the live Postgres and its Secrets, and
// decides once what the rotation acts on. Nothing is changed: a bad input fails the request
// before the database is paused. The plan is recorded in the request's status; later steps
// use it, never a cache that may lag the ops-manager's own writes.
func (c *Controller) planRotation(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) (*opsv1alpha1.RotateAuthPlan, error) {
	pg, err := c.pgopsClient.KubedbV1().Postgreses(req.Namespace).Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fatal(ReasonDatabaseNotFound, "Postgres %s/%s does not exist", req.Namespace, req.Spec.DatabaseRef.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Postgres %s: %w", req.Spec.DatabaseRef.Name, err)
	}
	if pg.Spec.AuthSecret == nil || pg.Spec.AuthSecret.Name == "" {
		return nil, fmt.Errorf("Postgres %s has no auth Secret yet", pg.Name)
	}
	// The current Secret is the one PostgreSQL accepts: after a change of
	// spec.authSecret.name, the Secret the database still runs on.
	plan := &opsv1alpha1.RotateAuthPlan{
		DatabaseUID:   pg.UID,
		CurrentSecret: pg.ActiveAuthSecretName(),
		TargetSecret:  pg.ActiveAuthSecretName(),
		StagedSecret:  stagedSecretName(req),
		StorageType:   string(kubedbv1.StorageTypeDurable),
	}
	if pg.Spec.StorageType == kubedbv1.StorageTypeEphemeral {
		plan.StorageType = string(kubedbv1.StorageTypeEphemeral)
	}

	// The credential PostgreSQL accepts is the record's: the current Secret may have been
	// edited since (and this request may be what applies the edit).
	current, recorded, err := c.acceptedCredential(ctx, req, pg.UID, plan.CurrentSecret)
	if err != nil {
		return nil, err
	}
	_, currentSecret, err := c.readCredential(ctx, pg.Namespace, plan.CurrentSecret)
	var unusable *failure
	if err != nil && !(recorded && (apierrors.IsNotFound(err) || errors.As(err, &unusable))) {
		return nil, err
	}
	if ref := userSecretRef(req); ref != nil {
		if ref.Name != plan.CurrentSecret && pg.Spec.StorageType == kubedbv1.StorageTypeEphemeral &&
			(pg.Spec.DeletionPolicy == kubedbv1.DeletionPolicyHalt || pg.Spec.Halted) {
			// The rotation names the user's Secret in spec.authSecret, and the API server
			// refuses any spec change of a Postgres that promises to keep Ephemeral data:
			// refused here, before the pause, rather than past the point of no return.
			return nil, fatal(ReasonInvalidRequest, "Postgres %s has storageType Ephemeral with deletionPolicy Halt or halted: true, "+
				"which keep data Ephemeral storage cannot keep and which the API server no longer accepts in a spec change; "+
				"set deletionPolicy to Delete or WipeOut (and halted to false) first", pg.Name)
		}
		if req.Labels[opsv1alpha1.LabelTrigger] == opsv1alpha1.TriggerAuthSecretChanged && pg.Spec.AuthSecret.Name != ref.Name {
			// pgops created this request for a change of spec.authSecret.name that has been
			// changed again (or back) since: rotating would undo the user's latest word.
			return nil, fatal(ReasonInvalidRequest, "spec.authSecret.name of Postgres %s names %s now, not %s: this rotation is no longer wanted",
				pg.Name, pg.Spec.AuthSecret.Name, ref.Name)
		}
		if _, err := c.checkUserSecret(ctx, req, pg, ref, plan.CurrentSecret, current, recorded); err != nil {
			return nil, err
		}
		plan.TargetSecret = ref.Name
	} else if currentSecret != nil && isImmutable(currentSecret) {
		return nil, fatal(ReasonSecretInvalid,
			"auth Secret %s is immutable, so a generated credential cannot be written into it; "+
				"rotate to a Secret of your own with authentication.secretRef", currentSecret.Name)
	}

	plan.RestartMode = restartMode(req)
	planPods(plan, pg, ptr.Deref(pg.Spec.Replicas, 1))
	c.restartUnrepointable(req.Namespace, pg.Name, plan)
	return plan, nil
}

// restartUnrepointable restarts, rather than re-points, the standbys that a re-point cannot
// reach or would not last on (the StatefulSet's OnDelete strategy keeps pods of earlier
// versions until they are deleted):
//   - a pod without the pgops agent (an earlier release's template, the shell entrypoint):
//     nothing in it can rewrite the passfile;
//   - a pod that takes its credential from another Secret than the credential record: its
//     next container start would write the auth Secret's password into the passfile, which
//     after an edit or a rotation to another Secret is not the one PostgreSQL accepts.
//
// The cache is enough: a pod created since from the current template has both.
func (c *Controller) restartUnrepointable(namespace, database string, plan *opsv1alpha1.RotateAuthPlan) {
	record := kubedbv1.CredentialRecordName(database)
	var kept []string
	for _, name := range plan.RepointPods {
		pod, err := c.pods.Pods(namespace).Get(name)
		switch {
		case err != nil:
			kept = append(kept, name)
			continue
		case agentPort(pod) == 0:
			plan.Notes = appendOnce(plan.Notes, "restarting standbys whose pod runs no pgops agent (a pod of an earlier release): "+
				"only the agent can re-point a running standby, and the restart moves the pod to it")
		case podCredentialSecret(pod) != record:
			plan.Notes = appendOnce(plan.Notes, fmt.Sprintf("restarting standbys whose pod takes its credential from Secret %s rather than the credential record: "+
				"a restart of their container after the rotation would read a credential PostgreSQL may not accept", podCredentialSecret(pod)))
		default:
			kept = append(kept, name)
			continue
		}
		plan.RestartPods = append(plan.RestartPods, name)
	}
	plan.RepointPods = kept
}

// agentPort is the port of the pgops agent in pod, 0 when the pod runs none.
func agentPort(pod *corev1.Pod) int {
	for _, ctr := range pod.Spec.Containers {
		for _, p := range ctr.Ports {
			if p.Name == agent.PortName {
				return int(p.ContainerPort)
			}
		}
	}
	return 0
}

// podCredentialSecret names the Secret pod's POSTGRES_PASSWORD comes from, "" if none.
func podCredentialSecret(pod *corev1.Pod) string {
	for _, ctr := range pod.Spec.Containers {
		for _, env := range ctr.Env {
			if env.Name == "POSTGRES_PASSWORD" && env.ValueFrom != nil && env.ValueFrom.SecretKeyRef != nil {
				return env.ValueFrom.SecretKeyRef.Name
			}
		}
	}
	return ""
}

// restartMode is the request's spec.rotateAuth.restart, AllPods when unset.
func restartMode(req *opsv1alpha1.PostgresOpsRequest) opsv1alpha1.RestartMode {
	if req.Spec.RotateAuth == nil || req.Spec.RotateAuth.Restart == "" {
		return opsv1alpha1.RestartAllPods
	}
	return req.Spec.RotateAuth.Restart
}

// planPods decides which pods restart, which standbys are re-pointed while running and
// which pods are kept, from the plan's mode, storage and Secrets (docs/architecture.md,
// "Restart modes"):
//   - standbys restart from the highest ordinal down; in mode None each is re-pointed
//     instead, unless it is Warm (it accepts no connection to re-point it through) or its
//     pod names another Secret than the target (its next container start would read the old
//     credential from there and lose replication);
//   - the primary restarts last, in mode AllPods only, and never when its storage is
//     Ephemeral (a restart would erase its data). It needs no restart in any mode: the new
//     password is set over SQL and pods read it only at initdb.
//
// replicas is how many pods the database runs: spec.replicas when the request is planned,
// the paused StatefulSet's when UpdateStatefulSets follows a scale (followScale).
func planPods(plan *opsv1alpha1.RotateAuthPlan, pg *kubedbv1.Postgres, replicas int32) {
	plan.RestartPods, plan.RepointPods, plan.KeptPods = nil, nil, nil
	replicas = max(replicas, 1)
	warm := pg.Spec.StandbyMode != nil && *pg.Spec.StandbyMode == kubedbv1.StandbyModeWarm
	for ordinal := replicas - 1; ordinal >= 1; ordinal-- {
		name := podName(pg.Name, ordinal)
		switch {
		case plan.RestartMode != opsv1alpha1.RestartNone:
			plan.RestartPods = append(plan.RestartPods, name)
		case warm:
			plan.RestartPods = append(plan.RestartPods, name)
			plan.Notes = appendOnce(plan.Notes, "restarting the standbys: they are Warm, so they accept no connection through which to re-point them")
		case plan.TargetSecret != plan.CurrentSecret:
			plan.RestartPods = append(plan.RestartPods, name)
			plan.Notes = appendOnce(plan.Notes, fmt.Sprintf("restarting the standbys: their pods name Secret %s, "+
				"so a restart of their container after the rotation would read the old credential and lose replication", plan.CurrentSecret))
		default:
			plan.RepointPods = append(plan.RepointPods, name)
		}
	}
	primary := podName(pg.Name, 0)
	switch {
	case plan.RestartMode != opsv1alpha1.RestartAllPods:
		plan.KeptPods = append(plan.KeptPods, primary)
	case plan.StorageType == string(kubedbv1.StorageTypeEphemeral):
		plan.KeptPods = append(plan.KeptPods, primary)
	default:
		plan.RestartPods = append(plan.RestartPods, primary)
	}
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// checkWorkloadsOwned refuses a database whose primary Service or StatefulSet is controlled
// by another object: two databases whose derived names collide ("x" has the governing
// Service "x-pods", the primary Service of a database "x-pods"). The rotation would log in
// to, or restart, the other database.
//
// It runs once the database is ready for the request: a halted or still provisioning
// database has no Service or StatefulSet to look at yet.
func (c *Controller) checkWorkloadsOwned(req *opsv1alpha1.PostgresOpsRequest, plan *opsv1alpha1.RotateAuthPlan) error {
	name := req.Spec.DatabaseRef.Name
	owned := func(kind string, obj metav1.Object, err error) error {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("waiting for the %s of Postgres %s, which does not exist", kind, name)
		}
		if err != nil {
			return fmt.Errorf("reading the %s of Postgres %s: %w", kind, name, err)
		}
		if owner := metav1.GetControllerOf(obj); owner == nil || owner.UID != plan.DatabaseUID {
			return fatal(ReasonNameConflict, "the %s %s is not controlled by Postgres %s: another object has its name; "+
				"rename one of the two databases", kind, obj.GetName(), name)
		}
		return nil
	}
	svc, err := c.services.Services(req.Namespace).Get(name)
	if err := owned("primary Service", svc, err); err != nil {
		return err
	}
	sts, err := c.statefulSets.StatefulSets(req.Namespace).Get(name)
	return owned("StatefulSet", sts, err)
}

func podName(statefulSet string, ordinal int32) string {
	return fmt.Sprintf("%s-%d", statefulSet, ordinal)
}

// userSecretRef is the Secret a user-provided rotation takes its credential from, or nil.
func userSecretRef(req *opsv1alpha1.PostgresOpsRequest) *opsv1alpha1.SecretReference {
	if req.Spec.Authentication == nil {
		return nil
	}
	return req.Spec.Authentication.SecretRef
}

// checkUserSecret reads and checks the credential a user provides: a Secret of the user's
// (not the current one, not one pgops made for another purpose or database), mutable so the
// previous credential can be recorded in it, with the database's username and a password
// that pods can carry.
func (c *Controller) checkUserSecret(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres,
	ref *opsv1alpha1.SecretReference, currentSecret string, current basicAuth, recorded bool) (basicAuth, error) {
	if ref.Kind != "" && ref.Kind != "Secret" {
		return basicAuth{}, fatal(ReasonInvalidRequest, "authentication.secretRef.kind must be Secret, got %q", ref.Kind)
	}
	if ref.Name == currentSecret && !recorded {
		// Without a credential record, rotating "to" the current Secret would lose the old
		// credential before it is replaced in PostgreSQL, and the pods would boot from an
		// edit PostgreSQL has not accepted.
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"authentication.secretRef names %s, the database's current auth Secret, and the database has no credential record (%s) to keep the credential PostgreSQL accepts; give a new Secret",
			ref.Name, kubedbv1.CredentialRecordName(pg.Name))
	}
	if other := c.otherDatabaseUsing(pg, ref.Name); other != "" {
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"authentication.secretRef names %s, the auth Secret of Postgres %s; give a Secret of this database's own", ref.Name, other)
	}
	secret, err := c.kubeClient.CoreV1().Secrets(req.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s named in authentication.secretRef does not exist", req.Namespace, ref.Name)
	}
	if err != nil {
		return basicAuth{}, fmt.Errorf("reading Secret %s: %w", ref.Name, err)
	}
	if secret.Labels[LabelOpsRequestUID] != "" {
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"Secret %s is a staged credential of a PostgresOpsRequest, not a Secret of yours; give another Secret", ref.Name)
	}
	if instance := secret.Labels[kubedbv1.LabelInstance]; secret.Labels[kubedbv1.LabelManagedBy] == kubedbv1.ManagedByValue && instance != pg.Name {
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"Secret %s is managed by pgops for Postgres %s; give a Secret of this database's own", ref.Name, instance)
	}
	if isImmutable(secret) {
		return basicAuth{}, fatal(ReasonSecretInvalid,
			"Secret %s/%s is immutable: pgops records the previous credential in it as username.prev and password.prev; "+
				"create it without immutable: true", req.Namespace, ref.Name)
	}
	auth, problem := basicAuthFrom(secret)
	if problem != "" {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s %s", req.Namespace, ref.Name, problem)
	}
	if ref.Name == currentSecret && auth == current {
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"authentication.secretRef names %s, the database's auth Secret, whose credential PostgreSQL accepts already: edit it first, or give a new Secret", ref.Name)
	}
	if auth.username != current.username {
		return basicAuth{}, fatal(ReasonUsernameChanged, "%s: Secret %s has username %q, the database's is %q",
			usernameCannotBeChanged, ref.Name, auth.username, current.username)
	}
	if err := credential.ValidatePodUsername(auth.username); err != nil {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s: the username cannot be used: %v", req.Namespace, ref.Name, err)
	}
	if err := credential.ValidatePodPassword(auth.password); err != nil {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s: the password cannot be used: %v", req.Namespace, ref.Name, err)
	}
	return auth, nil
}

// otherDatabaseUsing names another Postgres in pg's namespace whose auth Secret is name, if
// any. The cache is enough here: this only refuses an input, it never acts on it.
func (c *Controller) otherDatabaseUsing(pg *kubedbv1.Postgres, name string) string {
	all, err := c.postgreses.Postgreses(pg.Namespace).List(everything)
	if err != nil {
		return ""
	}
	for _, other := range all {
		if other.UID != pg.UID && other.Spec.AuthSecret != nil && other.Spec.AuthSecret.Name == name {
			return other.Name
		}
	}
	return ""
}

func isImmutable(secret *corev1.Secret) bool {
	return secret.Immutable != nil && *secret.Immutable
}
