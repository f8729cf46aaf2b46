package provisioner

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// ReasonPauseDropped is the event reason when a pause without a live request is removed.
const ReasonPauseDropped = "PauseDropped"

// The pause belongs to an ops request: status.pausedBy names it, by name and UID, next to
// the Paused condition. A request asks for it in its own status (AsksForPause, written with
// its plan), and the provisioner grants it by writing both (grantPause), once per request:
// pausedBy without the condition names the request that last held the pause. An ops-manager of
// an earlier version asks on the Postgres instead (Paused=Unknown), and is answered too
// (acknowledgePause). The provisioner honours a pause only while that request exists
// under that UID and has not ended; otherwise (the request was deleted without its
// finalizer, or a pause was set by hand) it drops the pause, so a database never stays
// paused forever.

// pauseHeld tells whether pg's pause belongs to a request that is still running. A cache
// that shows the request running under the holder's UID is trusted: keeping a pause is the
// safe side, and the request's end or deletion wakes this database once the cache sees it.
// Anything else (not in the cache yet, ended, gone, another UID) is confirmed live before the
// pause is dropped, since dropping a pause the ops-manager still holds would let this
// provisioner act on the pods mid-rotation.
func (c *Controller) pauseHeld(ctx context.Context, pg *kubedbv1.Postgres) (bool, error) {
	holder := pg.Status.PausedBy
	if holder == nil || meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) == nil {
		return false, nil
	}
	if cached, ok := c.cachedRequest(pg.Namespace, holder.Name); ok && holdsPause(cached, *holder) {
		return true, nil
	}
	req, err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(pg.Namespace).Get(ctx, holder.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading PostgresOpsRequest %s that pauses postgres %s: %w", holder.Name, pg.Name, err)
	}
	return holdsPause(req, *holder), nil
}

// holdsPause tells whether req is the running request holder names.
func holdsPause(req *opsv1alpha1.PostgresOpsRequest, holder kubedbv1.OpsRequestReference) bool {
	return req.UID == holder.UID && !req.Status.Phase.Ended()
}

// cachedRequest is the ops request called name from the informer's cache.
func (c *Controller) cachedRequest(namespace, name string) (*opsv1alpha1.PostgresOpsRequest, bool) {
	obj, exists, err := c.requestIndexer.GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return nil, false
	}
	req, ok := obj.(*opsv1alpha1.PostgresOpsRequest)
	return req, ok
}

// dropPause removes a pause whose request is gone or ended, and says so in an event.
func (c *Controller) dropPause(ctx context.Context, pg *kubedbv1.Postgres) (*kubedbv1.Postgres, error) {
	holder := pg.Status.PausedBy
	updated, err := c.updateStatus(ctx, pg, func(st *kubedbv1.PostgresStatus) {
		if !apiequalHolder(st.PausedBy, holder) {
			return // taken over meanwhile
		}
		// pausedBy stays, naming the request that last held the pause: it is never
		// granted another (grantPause).
		meta.RemoveStatusCondition(&st.Conditions, kubedbv1.ConditionPaused)
	})
	if err != nil {
		return pg, err
	}
	who := "no PostgresOpsRequest"
	if holder != nil {
		who = fmt.Sprintf("PostgresOpsRequest %s (uid %s), which is gone or has ended", holder.Name, holder.UID)
	}
	klog.FromContext(ctx).Info("Dropped a pause without a running request", "holder", who)
	c.recorder.Eventf(pg, corev1.EventTypeWarning, ReasonPauseDropped, "Resumed: the pause was held by %s", who)
	return updated, nil
}

func apiequalHolder(a, b *kubedbv1.OpsRequestReference) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// acknowledgePause answers a pause asked on the Postgres itself (Paused=Unknown), the way
// ops-managers before request-held asks paused: for the request named in status.pausedBy.
// Nothing is written to workloads in this sync, and later syncs leave them alone while the
// condition stays True.
func (c *Controller) acknowledgePause(ctx context.Context, pg *kubedbv1.Postgres) error {
	holder := pg.Status.PausedBy
	answered := false
	_, err := c.updateStatus(ctx, pg, func(st *kubedbv1.PostgresStatus) {
		cond := meta.FindStatusCondition(st.Conditions, kubedbv1.ConditionPaused)
		answered = cond != nil && cond.Status == metav1.ConditionUnknown && apiequalHolder(st.PausedBy, holder)
		if answered {
			recordPause(st, *holder, pg.Generation)
		} // else withdrawn, answered or taken over meanwhile
	})
	if err != nil || !answered {
		return err
	}
	c.reportPaused(ctx, pg, *holder)
	return nil
}

// pauseAsker is the oldest request, in the cache, that asks in its status for pg to be
// paused (AsksForPause), whose plan names this very Postgres, and that has not had its
// grant (pausedBy does not name it); nil when none does.
func (c *Controller) pauseAsker(pg *kubedbv1.Postgres) *opsv1alpha1.PostgresOpsRequest {
	for _, req := range c.requestsOf(pg) {
		if asksToPause(req, pg) && (pg.Status.PausedBy == nil || pg.Status.PausedBy.UID != req.UID) {
			return req
		}
	}
	return nil
}

func asksToPause(req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres) bool {
	return req.AsksForPause() && req.Status.RotateAuth.DatabaseUID == pg.UID
}

// grantPause pauses pg for asker, the request that asks for it, in one status write: the
// provisioner is the only writer of a pause, so no two requests can both think they hold
// it. A pause held by another running request is kept (that request's end wakes this
// database); one whose request is gone or ended is replaced.
//
// A request is granted a pause once: pausedBy naming it, with the Paused condition or
// without (it gave the pause back, or had it dropped), means it had its grant. So a cache
// behind the request, which may still show an ask that is over, never pauses the database
// again, and no read of the request is needed: the write re-checks pausedBy on the
// object it replaces, which the API server's resourceVersion guarantees is current.
func (c *Controller) grantPause(ctx context.Context, pg *kubedbv1.Postgres, asker *opsv1alpha1.PostgresOpsRequest) error {
	holder := pg.Status.PausedBy
	paused := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) != nil
	if holder != nil && holder.UID == asker.UID {
		return nil // granted already
	}
	if paused {
		held, err := c.pauseHeld(ctx, pg)
		if err != nil || held {
			return err
		}
	}
	grant := kubedbv1.OpsRequestReference{Name: asker.Name, UID: asker.UID}
	granted := false
	// On a conflict the write is retried on the object read again by name: it must still be
	// this Postgres (not one created again under its name), not being deleted, and its
	// pause as decided on here.
	_, err := c.writePostgres(ctx, pg, func(next *kubedbv1.Postgres) bool {
		granted = next.UID == pg.UID && next.DeletionTimestamp == nil &&
			apiequalHolder(next.Status.PausedBy, holder) &&
			(meta.FindStatusCondition(next.Status.Conditions, kubedbv1.ConditionPaused) != nil) == paused
		if granted {
			recordPause(&next.Status, grant, pg.Generation)
		} // else someone changed it meanwhile: the event of that write looks again
		return granted
	}, c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).UpdateStatus)
	if err != nil {
		return fmt.Errorf("pausing postgres %s/%s for PostgresOpsRequest %s: %w", pg.Namespace, pg.Name, asker.Name, err)
	}
	if !granted {
		return nil
	}
	c.reportPaused(ctx, pg, grant)
	return nil
}

// recordPause records the pause of holder in st. A pause handed over from another request
// starts its condition anew, so its age (kubectl pgops status, the paused-seconds metric) is
// the new holder's.
func recordPause(st *kubedbv1.PostgresStatus, holder kubedbv1.OpsRequestReference, generation int64) {
	if !apiequalHolder(st.PausedBy, &holder) {
		meta.RemoveStatusCondition(&st.Conditions, kubedbv1.ConditionPaused)
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:               kubedbv1.ConditionPaused,
		Status:             metav1.ConditionTrue,
		Reason:             ReasonPaused,
		Message:            fmt.Sprintf("Paused for PostgresOpsRequest %s: the provisioner leaves workloads and the auth secret alone until it resumes", holder.Name),
		ObservedGeneration: generation,
	})
	st.PausedBy = &holder
}

// reportPaused says that pg is paused for holder, and schedules the paused database's next
// observation.
func (c *Controller) reportPaused(ctx context.Context, pg *kubedbv1.Postgres, holder kubedbv1.OpsRequestReference) {
	klog.FromContext(ctx).Info("Paused reconciliation of workloads", "opsRequest", holder.Name)
	c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonPaused,
		"Paused for PostgresOpsRequest %s: workloads and the auth secret are left alone until it resumes", holder.Name)
	c.queue.AddAfter(cache.MetaObjectToName(pg), c.statusPeriod)
}

// syncPaused only observes, and labels pod roles: status is kept honest while paused, and a
// pod recreated during the pause (a restarted standby) still gets its role label, so the
// standby Service has endpoints for the rest of the rotation. Labels are not workloads: the
// StatefulSet and the Secret are left alone.
func (c *Controller) syncPaused(ctx context.Context, pg *kubedbv1.Postgres) error {
	_, cred, err := c.readAuthCredential(ctx, pg)
	var ue *userError
	if err != nil && !errors.As(err, &ue) {
		return err
	}
	if ue != nil {
		cred = &authCredential{secretName: pg.ActiveAuthSecretName(), unusable: ue}
	}
	rec, err := c.getRecord(ctx, pg)
	if err != nil && !errors.As(err, &ue) {
		return err
	}
	switch {
	case rec != nil:
		cred.attachRecord(rec)
		// The request holding the pause makes the Secret and PostgreSQL agree: mid-way, they
		// differ by design.
		cred.outOfSync = ""
	case cred.unusable == nil:
		cred.accepted = basicAuth{user: cred.user, password: cred.password}
	}
	if err := c.labelPodRoles(ctx, pg); err != nil {
		return err
	}
	if err := c.writeStatus(ctx, pg, cred, nil); err != nil {
		return err
	}
	c.queue.AddAfter(cache.MetaObjectToName(pg), c.statusPeriod)
	return nil
}
