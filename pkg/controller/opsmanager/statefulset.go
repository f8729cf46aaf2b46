package opsmanager

import (
	"context"
	"fmt"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// updateStatefulSets marks the pod template with this rotation, so the StatefulSet gets a new
// revision: RestartNodes then recognises restarted pods by that revision. The template's
// credential is the database's credential record (which UpdateCredential has written), or,
// for a database without one yet, the plan's target Secret: never a cached Postgres's, which
// may not show the switch to a user's Secret yet.
func (c *Controller) updateStatefulSets(ctx context.Context, r *rotation) (outcome, error) {
	secretName, err := c.podSecret(ctx, r.req)
	if err != nil {
		return outcome{}, err
	}
	written, err := c.pointStatefulSetAt(ctx, r.req, secretName)
	if err != nil {
		return outcome{}, err
	}
	if err := c.followScale(ctx, r.req, written); err != nil {
		return outcome{}, err
	}
	if len(r.req.Status.RotateAuth.RestartPods) == 0 {
		// No pod restarts in this rotation, so nothing waits for the new revision: a pod
		// started later (re-created, or after its container exits) gets the new template.
		return completed("StatefulSet %s uses Secret %s (generation %d)", written.Name, secretName, written.Generation), nil
	}
	// The write's own answer says which generation holds the new template; the cache tells
	// when the StatefulSet controller has observed it, so pods restart onto its revision.
	sts, err := c.statefulSets.StatefulSets(r.req.Namespace).Get(written.Name)
	if err != nil || !templateObserved(sts, written) {
		return answerAwaited("waiting for the StatefulSet controller to observe the new pod template"), nil
	}
	return completed("StatefulSet %s uses Secret %s (revision %s)", sts.Name, secretName, sts.Status.UpdateRevision), nil
}

// followScale makes the plan's pods the ones the StatefulSet runs now that the pause has
// frozen it: the plan took them from spec.replicas before the pause, and the provisioner may
// have scaled the StatefulSet since (its new standbys run the old credential and must be
// restarted or re-pointed too), or not yet (the pods spec.replicas adds are created only
// after the resume, from the new template, and must not be waited for). The new plan is
// recorded with the step, before any pod restarts.
func (c *Controller) followScale(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, sts *appsv1.StatefulSet) error {
	plan := req.Status.RotateAuth
	running := ptr.Deref(sts.Spec.Replicas, 1)
	if running < 1 || int(running) == len(plan.RestartPods)+len(plan.RepointPods)+len(plan.KeptPods) {
		return nil // scaled to zero by hand: RestartNodes waits for the pods, within spec.timeout
	}
	pg, err := c.liveDatabase(ctx, req)
	if err != nil {
		return err
	}
	planPods(plan, pg, running)
	c.restartUnrepointable(req.Namespace, pg.Name, plan)
	klog.FromContext(ctx).Info("The plan follows the StatefulSet's replicas", "replicas", running,
		"restart", plan.RestartPods, "repoint", plan.RepointPods, "keep", plan.KeptPods)
	return nil
}

// pointStatefulSetAt writes the credential references and the rotation marker into the
// database's StatefulSet, checked to be the planned database's, and returns it as stored.
func (c *Controller) pointStatefulSetAt(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, secretName string) (*appsv1.StatefulSet, error) {
	marker := string(req.UID)
	// A cached StatefulSet at the generation this controller wrote (or read live) with the
	// rotation's template is that very object: a sync that waits for the StatefulSet
	// controller needs no read to know it. Any other generation (someone changed the spec
	// since, or this controller restarted) is read live.
	if cached, err := c.statefulSets.StatefulSets(req.Namespace).Get(req.Spec.DatabaseRef.Name); err == nil &&
		c.templates.wrote(req.UID, cached.Generation) && checkOwnedByPlan(cached, req) == nil &&
		!pointTemplateAt(cached.DeepCopy(), secretName, marker) {
		return cached, nil
	}
	statefulSets := c.kubeClient.AppsV1().StatefulSets(req.Namespace)
	var written *appsv1.StatefulSet
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts, err := statefulSets.Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading StatefulSet %s: %w", req.Spec.DatabaseRef.Name, err)
		}
		if err := checkOwnedByPlan(sts, req); err != nil {
			return err
		}
		written = sts
		if !pointTemplateAt(sts, secretName, marker) {
			return nil
		}
		written, err = statefulSets.Update(ctx, sts, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err == nil {
		c.templates.remember(req.UID, written.Generation)
	}
	return written, err
}

// writtenTemplates remembers, per request, the StatefulSet generation that holds its
// template as this controller wrote or read it live.
type writtenTemplates struct {
	mu    sync.Mutex
	byUID map[types.UID]int64
}

func (w *writtenTemplates) remember(uid types.UID, generation int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byUID == nil {
		w.byUID = map[types.UID]int64{}
	}
	w.byUID[uid] = generation
}

func (w *writtenTemplates) wrote(uid types.UID, generation int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.byUID[uid]
	return ok && g == generation
}

// forget drops what is remembered of a request that has ended.
func (w *writtenTemplates) forget(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byUID, uid)
}

// checkOwnedByPlan refuses an object that is not controlled by the planned Postgres: an
// object of another database whose derived name collides, or of a replaced database.
func checkOwnedByPlan(obj metav1.Object, req *opsv1alpha1.PostgresOpsRequest) error {
	owner := metav1.GetControllerOf(obj)
	if owner == nil || owner.Kind != kubedbv1.ResourceKindPostgres || owner.UID != req.Status.RotateAuth.DatabaseUID {
		return fmt.Errorf("%s is not controlled by Postgres %s (uid %s)", obj.GetName(), req.Spec.DatabaseRef.Name, req.Status.RotateAuth.DatabaseUID)
	}
	return nil
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

// templateObserved tells whether the cached StatefulSet holds the template that was
// written, and the StatefulSet controller has observed it.
func templateObserved(cached, written *appsv1.StatefulSet) bool {
	return cached.Generation >= written.Generation &&
		cached.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation] == written.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation] &&
		revisionObserved(cached)
}

// revisionObserved is true once the StatefulSet controller has seen the latest spec, so
// status.updateRevision is the revision of the current template.
func revisionObserved(sts *appsv1.StatefulSet) bool {
	return sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != ""
}
