package provisioner

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// syncHandler brings the Postgres called name to its desired state, in order:
//
//  1. deletion: apply the deletion policy and release the finalizer;
//  2. finalizer: make sure it is there, once no other application's object holds one of
//     the database's names (ownership.go);
//  3. pause handshake: answer Paused=Unknown with True for the request in status.pausedBy;
//     while True, only observe status and label pod roles; drop a pause whose request is
//     gone or ended;
//  4. credentials: adopt or create the credential record (record.go), which the pods boot
//     from; generate "<name>-auth" or check the user's; a change of its name, or an edit of
//     its content, to a credential PostgreSQL does not accept yet becomes a RotateAuth
//     (rotation.go);
//  5. halt: remove StatefulSet and Services, keep data and Secret;
//     else a rotation on the rotateAfter schedule, and pruning of the requests pgops made;
//  6. version → image;
//  7. ConfigMap, Services (primary first), StatefulSet, pod role labels;
//  8. status, then a requeue after the status period to keep the phase honest.
//
// It is idempotent. Problems the user must fix end the sync with a condition and a Warning
// event, not an error; other errors are returned and retried with backoff.
func (c *Controller) syncHandler(ctx context.Context, name cache.ObjectName) error {
	ctx, unlock := c.withWorkloadLock(ctx, name)
	defer unlock()
	logger := klog.FromContext(ctx)
	cached, err := c.postgresLister.Postgreses(name.Namespace).Get(name.Name)
	if apierrors.IsNotFound(err) {
		logger.V(4).Info("Postgres is gone")
		c.written.Forget(name)
		c.forgetHealth(name)
		return nil
	}
	if err != nil {
		return err
	}
	pg := c.written.Newest(cached)

	if pg.DeletionTimestamp != nil {
		return c.handleDeletion(ctx, pg)
	}

	if !hasFinalizer(pg) {
		if err := c.findNameConflict(ctx, pg); err != nil {
			return c.handleStepError(ctx, pg, nil, err)
		}
		if pg, err = c.updatePostgres(ctx, pg, func(p *kubedbv1.Postgres) bool {
			if hasFinalizer(p) {
				return false
			}
			p.Finalizers = append(p.Finalizers, Finalizer)
			return true
		}); err != nil {
			return err
		}
	}

	// pausedBy without the Paused condition only names the request that last held the pause.
	if paused := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused); paused != nil {
		held, err := c.pauseHeld(ctx, pg)
		if err != nil {
			return err
		}
		if !held {
			if pg, err = c.dropPause(ctx, pg); err != nil {
				return err
			}
		} else if paused.Status == metav1.ConditionUnknown {
			return c.acknowledgePause(ctx, pg)
		} else if paused.Status == metav1.ConditionTrue {
			return c.syncPaused(ctx, pg)
		}
	}
	if asker := c.pauseAsker(pg); asker != nil {
		// Granted here too, not only on the pause queue: a request whose ask this sync sees
		// first must not wait while workloads are reconciled.
		return c.grantPause(ctx, pg, asker)
	}

	rec, err := c.adoptRecord(ctx, pg)
	if err != nil {
		return c.handleStepError(ctx, pg, nil, err)
	}
	pg, cred, err := c.ensureAuthSecret(ctx, pg, rec)
	if err != nil {
		var ue *userError
		if !errors.As(err, &ue) || rec == nil || (ue.reason != ReasonAuthSecretNotFound && ue.reason != ReasonAuthSecretInvalid) {
			return c.handleStepError(ctx, pg, nil, err)
		}
		// The record keeps the credential PostgreSQL accepts and the pods boot from it: a
		// missing or broken auth Secret is reported, and the database keeps running.
		cred = &authCredential{secretName: pg.ActiveAuthSecretName(), unusable: ue}
	}
	if rec, err = c.ensureRecord(ctx, pg, rec, basicAuth{user: cred.user, password: cred.password}); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	cred.attachRecord(rec)
	if cred.note == nil && cred.outOfSync != "" {
		cred.note = c.applySecretEdit(ctx, pg, cred)
	}

	if pg.Spec.Halted {
		if err := c.halt(ctx, pg); err != nil {
			return err
		}
		if cred.note == nil {
			cred.note = noRotation
		}
		return c.finishSync(ctx, pg, cred, nil)
	}
	if cred.note == nil {
		cred.note = c.scheduleRotation(ctx, pg, cred)
	}
	if err := c.pruneRequests(ctx, pg); err != nil {
		return err
	}

	image, err := c.images.Image(pg.Spec.Version)
	if err != nil {
		var ve *VersionError
		if errors.As(err, &ve) {
			err = &userError{reason: ReasonUnsupportedVersion, msg: ve.Error()}
		}
		return c.handleStepError(ctx, pg, cred, err)
	}

	// Refused before any workload changes: a configuration no standbys can meet would make
	// every commit wait.
	if _, err := desiredSynchronousReplication(pg); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	if err := c.ensureServices(ctx, pg); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	if err := c.ensureStatefulSet(ctx, pg, image, rec.Name); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	if err := c.retireEntrypointConfigMap(ctx, pg); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	if err := c.ensurePodDisruptionBudget(ctx, pg); err != nil {
		return c.handleStepError(ctx, pg, cred, err)
	}
	if err := c.labelPodRoles(ctx, pg); err != nil {
		return err
	}
	return c.finishSync(ctx, pg, cred, nil)
}

// finishSync writes the status and schedules the next look: after the status period, or
// sooner when a rotation is due.
func (c *Controller) finishSync(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential, blocked *userError) error {
	if err := c.writeStatus(ctx, pg, cred, blocked); err != nil {
		return err
	}
	next := c.statusPeriod
	if cred != nil && cred.note != nil && cred.note.recheck > 0 && cred.note.recheck < next {
		next = cred.note.recheck
	}
	c.queue.AddAfter(cache.MetaObjectToName(pg), next)
	return nil
}

// handleStepError turns a user-fixable error into a condition and a Warning event (emitted
// when the message changes, so a periodic requeue does not flood events) and returns other
// errors for a retry.
func (c *Controller) handleStepError(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential, err error) error {
	var ue *userError
	if !errors.As(err, &ue) {
		return err
	}
	klog.FromContext(ctx).Info("Cannot provision until the user acts", "reason", ue.reason, "problem", ue.msg)
	if cond := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionProvisioningStarted); cond == nil ||
		cond.Reason != ue.reason || cond.Message != ue.msg {
		c.recorder.Event(pg, corev1.EventTypeWarning, ue.reason, ue.msg)
	}
	return c.finishSync(ctx, pg, cred, ue)
}

// halt removes the StatefulSet (and so the pods) and the Services; PVCs, the ConfigMap and the
// auth Secret stay, so clearing spec.halted brings the database back with its data.
func (c *Controller) halt(ctx context.Context, pg *kubedbv1.Postgres) error {
	if err := c.deleteOwned(ctx, pg, "StatefulSet", statefulSetName(pg)); err != nil {
		return err
	}
	for _, svc := range []string{primaryServiceName(pg), standbyServiceName(pg), governingServiceName(pg)} {
		if err := c.deleteOwned(ctx, pg, "Service", svc); err != nil {
			return err
		}
	}
	return nil
}

func hasFinalizer(pg *kubedbv1.Postgres) bool {
	for _, f := range pg.Finalizers {
		if f == Finalizer {
			return true
		}
	}
	return false
}
