package provisioner

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// Condition reasons and event reasons.
const (
	ReasonProvisioningStarted           = "DatabaseProvisioningStartedSuccessfully"
	ReasonAuthSecretNotFound            = "AuthSecretNotFound"
	ReasonAuthSecretInvalid             = "AuthSecretInvalid"
	ReasonAuthSecretSuperseded          = "AuthSecretSuperseded"
	ReasonUnsupportedVersion            = "UnsupportedVersion"
	ReasonObjectConflict                = "ObjectConflict"
	ReasonAllReplicasReady              = "AllReplicasReady"
	ReasonReplicasNotReady              = "ReplicasNotReady"
	ReasonStandbyNotStreaming           = "StandbyNotStreaming"
	ReasonInvalidSynchronousReplication = "InvalidSynchronousReplication"
	ReasonSynchronousStandbys           = "SynchronousStandbysStreaming"
	ReasonTooFewSynchronousStandbys     = "TooFewSynchronousStandbys"
	ReasonSynchronousUnknown            = "SynchronousStateUnknown"
	ReasonAcceptingConnection           = "DatabaseAcceptingConnectionRequest"
	ReasonNotAcceptingConn              = "DatabaseNotAcceptingConnectionRequest"
	ReasonCredentialUnknown             = "CredentialUnavailable"
	ReasonReady                         = "ReadinessCheckSucceeded"
	ReasonProvisioned                   = "DatabaseSuccessfullyProvisioned"
	ReasonNotProvisioned                = "DatabaseNotProvisionedYet"
	ReasonHalted                        = "Halted"
	ReasonPaused                        = "PausedByProvisioner"
	ReasonResumed                       = "Resumed"
	ReasonAuthSecretCreated             = "AuthSecretCreated"
	ReasonAuthSecretAdopted             = "AuthSecretAdopted"
	ReasonServiceCreated                = "ServiceCreated"
	ReasonPodDisruptionBudgetCreated    = "PodDisruptionBudgetCreated"
	ReasonStatefulSetCreated            = "StatefulSetCreated"
	ReasonStatefulSetUpdated            = "StatefulSetUpdated"
	ReasonScaled                        = "Scaled"
	ReasonDeleted                       = "Deleted"
	ReasonPhaseChanged                  = "PhaseChanged"
	ReasonDeletionRefused               = "DeletionRefused"
	ReasonDeletionWaitsOnPause          = "DeletionWaitsForPause"
	ReasonWipedOut                      = "WipedOut"
	ReasonSecretKept                    = "AuthSecretKept"
)

// userError is a problem the user has to fix (a missing Secret, a bad version, a name clash).
// Its message goes into a condition and a Warning event, so it must never hold a secret.
type userError struct {
	reason string
	msg    string
}

func (e *userError) Error() string { return e.msg }

// observation is what the status is computed from.
type observation struct {
	// blocked is why the sync could not reconcile the workloads, if it could not.
	blocked *userError
	halted  bool
	// outOfSync says why the auth Secret holds another credential than the one PostgreSQL
	// accepts, if it does.
	outOfSync string
	// recordName is the credential record the primary was checked with.
	recordName string
	// checked says whether the primary was checked; primaryErr is the result.
	checked    bool
	primaryErr error
	// desired and ready count pods with ordinal < replicas.
	desired       int32
	ready         int32
	primaryReady  bool
	standbysReady bool
	// notStreaming are standbys the primary does not see streaming (checked only when the
	// primary accepts the login); outdated are pods on an older StatefulSet revision.
	notStreaming []string
	outdated     map[string]bool
	// sync is the synchronous replication pg asks for; syncInvalid says its
	// configuration is invalid (the primary's settings are then left as they are).
	// syncApplied is what the primary was asked to wait for; synchronous counts the
	// database's standbys the primary counts towards a commit, known when syncKnown.
	// asyncConfirmed says the primary was found back at asynchronous replication.
	sync           synchronousReplication
	syncInvalid    bool
	syncApplied    credential.SynchronousSettings
	syncWaitsFor   int
	synchronous    int
	syncKnown      bool
	asyncConfirmed bool
}

// observe looks at pg's pods and asks the HealthChecker about the primary, with cred (which
// may be nil when the credential is unavailable).
func (c *Controller) observe(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential, blocked *userError) observation {
	obs := observation{blocked: blocked, halted: pg.Spec.Halted, desired: replicas(pg), recordName: credentialRecordName(pg)}
	if sync, err := desiredSynchronousReplication(pg); err == nil {
		obs.sync = sync
	} else {
		obs.syncInvalid = true
	}
	if obs.halted {
		return obs
	}
	pods, err := c.listPods(pg)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing pods")
	}
	obs.standbysReady = true
	readyByOrdinal := map[int]bool{}
	readyNames := map[string]bool{}
	for _, p := range pods {
		readyByOrdinal[podOrdinal(pg, p)] = isPodReady(p)
		readyNames[p.Name] = isPodReady(p)
	}
	for i := 0; i < int(obs.desired); i++ {
		if readyByOrdinal[i] {
			obs.ready++
		} else if i > 0 {
			obs.standbysReady = false
		}
	}
	obs.primaryReady = readyByOrdinal[0]
	if cred == nil || cred.accepted.password == "" {
		return obs
	}
	obs.outOfSync = cred.outOfSync
	obs.checked = true
	if !obs.primaryReady {
		// Not Ready (absent, terminating, starting): no client reaches it through its
		// Service, whatever a login to it would say. This also keeps a restart's status at
		// one write while the pod goes away, instead of one while the terminating primary
		// still answers and one when it stops.
		obs.primaryErr = fmt.Errorf("the primary pod %s-0 is not ready", statefulSetName(pg))
		return obs
	}
	svc, err := c.serviceLister.Services(pg.Namespace).Get(primaryServiceName(pg))
	if err != nil || !isOwnedBy(svc, pg) {
		obs.primaryErr = fmt.Errorf("primary service %s/%s not found", pg.Namespace, primaryServiceName(pg))
		return obs
	}
	// The login uses the credential PostgreSQL accepts as pgops recorded it; whether the auth
	// Secret agrees is outOfSync.
	ep := PrimaryEndpoint{Service: svc, User: cred.accepted.user, Password: cred.accepted.password}
	for i := 1; i < int(obs.desired); i++ {
		ep.Standbys = append(ep.Standbys, fmt.Sprintf("%s-%d", statefulSetName(pg), i))
	}
	// Synchronous settings are applied at every check (ALTER SYSTEM only where the
	// primary's differ), so a hand edit is reverted and the list follows the ready
	// standbys. An asynchronous database is returned to PostgreSQL's defaults only while
	// it carries the SynchronousReplication condition, which stays until the primary is
	// found back at them: settings pgops never made are not pgops's to reset. An invalid
	// configuration leaves the primary's settings as they are.
	wasSynchronous := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionSynchronousReplication) != nil
	switch {
	case obs.sync.enabled():
		// The primary waits only for standbys that can confirm: Ready and, as far as the
		// last check saw, streaming. A Ready standby that does not stream (its passfile is
		// stale, its WAL receiver waits) would make every commit wait for it. A standby that
		// starts streaming counts from the check after the one that sees it.
		streaming, known := c.lastStreaming(cache.MetaObjectToName(pg))
		ready := map[string]bool{}
		for i := 1; i < int(obs.desired); i++ {
			name := fmt.Sprintf("%s-%d", statefulSetName(pg), i)
			if readyByOrdinal[i] && (!known || streaming[name]) {
				ready[name] = true
			}
		}
		obs.syncApplied, obs.syncWaitsFor = obs.sync.settingsFor(ready)
		ep.Synchronous = &obs.syncApplied
	case !obs.syncInvalid && wasSynchronous:
		ep.Synchronous = &credential.SynchronousSettings{}
	}
	check := c.checkHealth(ctx, pg, ep, pods, len(ep.Standbys) > 0 || ep.Synchronous != nil)
	if credential.Classify(check.primaryErr) == credential.ClassAuth {
		// The cache may not show the record the ops-manager has just written (PostgreSQL
		// took the new credential a moment ago): ask again with the record read live
		// before saying the password was changed outside pgops.
		if live, err := c.kubeClient.CoreV1().Secrets(pg.Namespace).Get(ctx, credentialRecordName(pg), metav1.GetOptions{}); err == nil &&
			kubedbv1.IsCredentialRecordOf(live, pg.Name) && recordedCredential(live) != cred.accepted {
			ep.User, ep.Password = recordedCredential(live).user, recordedCredential(live).password
			check = c.checkHealth(ctx, pg, ep, pods, len(ep.Standbys) > 0 || ep.Synchronous != nil)
		}
	}
	obs.primaryErr = check.primaryErr
	if obs.primaryErr != nil {
		klog.FromContext(ctx).V(2).Info("The primary does not accept connections", "err", obs.primaryErr.Error())
		c.recheckJustReadyPrimary(pg, pods, obs.primaryErr)
	}
	if obs.primaryErr != nil || !check.asked {
		return obs
	}
	if check.replicationErr != nil {
		klog.FromContext(ctx).Info("Cannot read replication state", "err", check.replicationErr.Error())
		return obs
	}
	if check.replication.SettingsChanged {
		klog.FromContext(ctx).Info("Applied synchronous replication settings", "synchronous_standby_names", ep.Synchronous.StandbyNames, "synchronous_commit", ep.Synchronous.Commit)
	}
	standby := map[string]bool{}
	for _, name := range ep.Standbys {
		standby[name] = true
	}
	seen := map[string]bool{}
	for _, s := range check.replication.Standbys {
		seen[s.Name] = true
		// Only the database's standbys: with the wildcard, a pg_basebackup's WAL stream
		// would count too.
		if s.Synchronous() && standby[s.Name] {
			obs.synchronous++
		}
	}
	if obs.sync.enabled() {
		// With ANY k, every listed standby that streams is a quorum member, but a commit
		// waits for k of them: no more than k confirm each commit. k is below what was
		// asked while standbys are not counted (down, or not seen streaming yet).
		obs.synchronous = min(obs.synchronous, obs.syncWaitsFor)
		// The settings applied counted the standbys the previous check saw streaming. When
		// this check sees another set (one started, or stopped, streaming), the next sync
		// applies settings for it at once, rather than a status period later: a standby that
		// stopped streaming would hold every commit meanwhile. Only a change of the settings
		// asks for it, so a standby that flaps costs a sync a second at most.
		next := map[string]bool{}
		for name := range standby {
			if readyNames[name] && seen[name] {
				next[name] = true
			}
		}
		if settings, _ := obs.sync.settingsFor(next); settings != obs.syncApplied {
			c.queue.AddAfter(cache.MetaObjectToName(pg), time.Second)
		}
	}
	obs.syncKnown = !check.replication.SettingsChanged
	obs.asyncConfirmed = !obs.sync.enabled() && ep.Synchronous != nil && !check.replication.SettingsChanged
	for _, name := range ep.Standbys {
		if !seen[name] {
			obs.notStreaming = append(obs.notStreaming, name)
		}
	}
	obs.outdated = c.outdatedPods(pg, pods)
	return obs
}

// outdatedPods are pg's pods that run an older revision than the StatefulSet's template:
// with the OnDelete strategy they pick up a new credential only when deleted.
func (c *Controller) outdatedPods(pg *kubedbv1.Postgres, pods []*corev1.Pod) map[string]bool {
	sts, err := c.statefulSetLister.StatefulSets(pg.Namespace).Get(statefulSetName(pg))
	if err != nil || sts.Status.UpdateRevision == "" {
		return nil
	}
	out := map[string]bool{}
	for _, p := range pods {
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] != sts.Status.UpdateRevision {
			out[p.Name] = true
		}
	}
	return out
}

// replicationMessage says which standbys do not stream, and what to do about those on an
// outdated pod revision.
func replicationMessage(obs observation) string {
	var parts []string
	for _, name := range obs.notStreaming {
		part := name
		if obs.outdated[name] {
			part += " (it runs an outdated pod revision and may hold an old credential: delete the pod to restart it)"
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("%d/%d replicas are ready; standbys not streaming from the primary: %s",
		obs.ready, obs.desired, strings.Join(parts, ", "))
}

// applyObservation sets phase and conditions on st from obs, for generation.
func applyObservation(st *kubedbv1.PostgresStatus, obs observation, generation int64) {
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation,
		})
	}
	st.ObservedGeneration = generation
	provisioned := meta.IsStatusConditionTrue(st.Conditions, kubedbv1.ConditionProvisioned)

	if obs.blocked != nil {
		set(kubedbv1.ConditionProvisioningStarted, metav1.ConditionFalse, obs.blocked.reason, obs.blocked.msg)
	} else {
		set(kubedbv1.ConditionProvisioningStarted, metav1.ConditionTrue, ReasonProvisioningStarted,
			"The provisioner has started provisioning the database")
	}

	if obs.halted {
		msg := "The database is halted: pods and services are removed, data and the auth secret are kept"
		set(kubedbv1.ConditionReplicaReady, metav1.ConditionFalse, ReasonHalted, msg)
		set(kubedbv1.ConditionAcceptingConnection, metav1.ConditionFalse, ReasonHalted, msg)
		set(kubedbv1.ConditionReady, metav1.ConditionFalse, ReasonHalted, msg)
		st.Phase = kubedbv1.DatabasePhaseHalted
		return
	}

	switch {
	case obs.ready == obs.desired && len(obs.notStreaming) > 0:
		set(kubedbv1.ConditionReplicaReady, metav1.ConditionFalse, ReasonStandbyNotStreaming, replicationMessage(obs))
	case obs.ready == obs.desired:
		set(kubedbv1.ConditionReplicaReady, metav1.ConditionTrue, ReasonAllReplicasReady,
			fmt.Sprintf("%d/%d replicas are ready", obs.ready, obs.desired))
	default:
		set(kubedbv1.ConditionReplicaReady, metav1.ConditionFalse, ReasonReplicasNotReady,
			fmt.Sprintf("%d/%d replicas are ready", obs.ready, obs.desired))
	}

	primaryOK := obs.checked && obs.primaryErr == nil
	switch {
	case !obs.checked:
		set(kubedbv1.ConditionAcceptingConnection, metav1.ConditionUnknown, ReasonCredentialUnknown,
			"The auth secret is unavailable, so the primary cannot be checked")
	case primaryOK:
		set(kubedbv1.ConditionAcceptingConnection, metav1.ConditionTrue, ReasonAcceptingConnection,
			"The primary accepts connections")
	default:
		set(kubedbv1.ConditionAcceptingConnection, metav1.ConditionFalse, ReasonNotAcceptingConn, primaryProblem(obs.primaryErr, obs.recordName))
	}

	applySynchronousObservation(st, obs, primaryOK, set)
	allUp := primaryOK && obs.standbysReady && len(obs.notStreaming) == 0 && !tooFewSynchronous(obs)
	switch {
	case !provisioned && !allUp:
		st.Phase = kubedbv1.DatabasePhaseProvisioning
	case !obs.checked:
		st.Phase = kubedbv1.DatabasePhaseUnknown
	case allUp:
		st.Phase = kubedbv1.DatabasePhaseReady
	case primaryOK:
		st.Phase = kubedbv1.DatabasePhaseCritical
	default:
		st.Phase = kubedbv1.DatabasePhaseNotReady
	}

	// Provisioned never goes back to False: it records that the database was up once.
	if provisioned || (allUp && obs.blocked == nil) {
		set(kubedbv1.ConditionProvisioned, metav1.ConditionTrue, ReasonProvisioned, "The database has been provisioned")
	} else {
		set(kubedbv1.ConditionProvisioned, metav1.ConditionFalse, ReasonNotProvisioned, "The database is not up yet")
	}

	if obs.outOfSync != "" && st.Phase == kubedbv1.DatabasePhaseReady {
		// The database runs, but clients that read the auth Secret cannot log in. A phase
		// that says worse (Critical, Provisioning) stays: it is what a request must wait for.
		st.Phase = kubedbv1.DatabasePhaseNotReady
		set(kubedbv1.ConditionReady, metav1.ConditionFalse, kubedbv1.ReasonAuthSecretOutOfSync, obs.outOfSync)
		return
	}
	if st.Phase == kubedbv1.DatabasePhaseReady {
		set(kubedbv1.ConditionReady, metav1.ConditionTrue, ReasonReady, "The primary and every standby accept connections")
	} else {
		set(kubedbv1.ConditionReady, metav1.ConditionFalse, string(st.Phase), readyMessage(st.Phase, obs))
	}
}

// primaryProblem says why the primary does not accept connections in words that stay the
// same while the cause does: a restarting primary answers with several errors in turn
// (connection refused, starting up, a timeout), and each new message would be another
// status write. observe logs the error itself.
func primaryProblem(err error, recordName string) string {
	switch credential.Classify(err) {
	case credential.ClassAuth:
		return fmt.Sprintf("The primary refuses the credential pgops recorded for it in Secret %s: its password was changed outside pgops", recordName)
	case credential.ClassUnreachable:
		return "The primary does not answer: it is down, starting or unreachable"
	}
	return err.Error()
}

// tooFewSynchronous: fewer standbys than asked confirm commits (and the commit level
// has commits wait for standbys at all): replication is below what the user asked for.
func tooFewSynchronous(obs observation) bool {
	return obs.sync.enabled() && obs.sync.commitsWait() && obs.syncKnown && obs.synchronous < obs.sync.required
}

// applySynchronousObservation keeps the SynchronousReplication condition while pg asks for
// synchronous replication, and until the primary is found back at asynchronous
// replication afterwards.
func applySynchronousObservation(st *kubedbv1.PostgresStatus, obs observation, primaryOK bool, set func(t string, s metav1.ConditionStatus, reason, msg string)) {
	present := meta.FindStatusCondition(st.Conditions, kubedbv1.ConditionSynchronousReplication) != nil
	if !obs.sync.enabled() {
		switch {
		case obs.asyncConfirmed || !present:
			meta.RemoveStatusCondition(&st.Conditions, kubedbv1.ConditionSynchronousReplication)
		case obs.syncInvalid:
			set(kubedbv1.ConditionSynchronousReplication, metav1.ConditionUnknown, ReasonInvalidSynchronousReplication,
				"The synchronous replication configuration is invalid (see ProvisioningStarted): the primary's settings are left as they are")
		default:
			set(kubedbv1.ConditionSynchronousReplication, metav1.ConditionUnknown, ReasonSynchronousUnknown,
				"Returning the primary to asynchronous replication")
		}
		return
	}
	settings := fmt.Sprintf("synchronous_standby_names '%s', synchronous_commit %s", obs.syncApplied.StandbyNames, obs.syncApplied.Commit)
	switch {
	case !primaryOK || !obs.syncKnown:
		set(kubedbv1.ConditionSynchronousReplication, metav1.ConditionUnknown, ReasonSynchronousUnknown,
			"Waiting for the primary to report its synchronous standbys ("+settings+")")
	case obs.synchronous < obs.sync.required:
		set(kubedbv1.ConditionSynchronousReplication, metav1.ConditionFalse, ReasonTooFewSynchronousStandbys,
			fmt.Sprintf("%d of the %d required synchronous standbys confirm commits; until more standbys are ready the primary waits for %d (%s)",
				obs.synchronous, obs.sync.required, obs.syncWaitsFor, settings))
	default:
		set(kubedbv1.ConditionSynchronousReplication, metav1.ConditionTrue, ReasonSynchronousStandbys,
			fmt.Sprintf("%d synchronous standby(s) confirm commits, %d required (%s)", obs.synchronous, obs.sync.required, settings))
	}
}

func readyMessage(phase kubedbv1.DatabasePhase, obs observation) string {
	switch phase {
	case kubedbv1.DatabasePhaseCritical:
		if tooFewSynchronous(obs) {
			return fmt.Sprintf("The primary accepts connections but only %d of the %d required synchronous standbys confirm commits", obs.synchronous, obs.sync.required)
		}
		if len(obs.notStreaming) > 0 && obs.standbysReady {
			return "The primary accepts connections but not every standby streams from it: " + replicationMessage(obs)
		}
		return fmt.Sprintf("The primary accepts connections but not every standby is ready (%d/%d replicas ready)", obs.ready, obs.desired)
	case kubedbv1.DatabasePhaseNotReady:
		return "The primary does not accept connections"
	case kubedbv1.DatabasePhaseUnknown:
		return "The provisioner cannot tell whether the database is up"
	}
	if obs.blocked != nil {
		return obs.blocked.msg
	}
	return "The database is being provisioned"
}

// writeStatus observes pg and writes its status when it changed.
func (c *Controller) writeStatus(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential, blocked *userError) error {
	releaseWorkloadLock(ctx) // from here on the sync only observes
	obs := c.observe(ctx, pg, cred, blocked)
	// The status says what this sync saw and did, so for this sync's generation, even when a
	// newer spec has reached the cache meanwhile (its own sync follows).
	generation := pg.Generation
	// The observation logs in to the database, which takes a while: another writer's change
	// of the status (the ops-manager's resume, as a restarted primary turns Ready) may have
	// reached the cache meanwhile. Writing on the newest copy spares a conflict and its retry.
	pg = c.newestPostgres(pg)
	oldPhase := pg.Status.Phase
	before := meta.FindStatusCondition(pg.Status.Conditions, ConditionCredentialRotation)
	now := c.now()
	updated, err := c.updateStatus(ctx, pg, func(st *kubedbv1.PostgresStatus) {
		applyObservation(st, obs, generation)
		applyCredentialStatus(st, cred, generation, now)
	})
	if err != nil {
		return err
	}
	if after := meta.FindStatusCondition(updated.Status.Conditions, ConditionCredentialRotation); after != nil &&
		after.Status == metav1.ConditionFalse && (before == nil || before.Message != after.Message) {
		c.recorder.Event(updated, corev1.EventTypeWarning, after.Reason, after.Message)
	}
	if newPhase := updated.Status.Phase; newPhase != oldPhase && oldPhase != "" {
		typ := corev1.EventTypeNormal
		if newPhase == kubedbv1.DatabasePhaseCritical || newPhase == kubedbv1.DatabasePhaseNotReady || newPhase == kubedbv1.DatabasePhaseUnknown {
			typ = corev1.EventTypeWarning
		}
		msg := fmt.Sprintf("Phase changed from %s to %s", oldPhase, newPhase)
		if cond := meta.FindStatusCondition(updated.Status.Conditions, kubedbv1.ConditionReady); cond != nil && newPhase != kubedbv1.DatabasePhaseReady {
			msg += ": " + cond.Message
		}
		c.recorder.Event(updated, typ, ReasonPhaseChanged, msg)
	}
	return nil
}

// newestPostgres is the newest copy of pg the provisioner knows of: the cache's, or its own
// later write (a cache only moves forward, so another resourceVersion there is a later
// change); pg itself when the cache holds nothing newer, or no longer that object.
func (c *Controller) newestPostgres(pg *kubedbv1.Postgres) *kubedbv1.Postgres {
	cached, err := c.postgresLister.Postgreses(pg.Namespace).Get(pg.Name)
	if err != nil || cached.UID != pg.UID {
		return pg
	}
	if newest := c.written.Newest(cached); newest.ResourceVersion != pg.ResourceVersion {
		return newest
	}
	return pg
}

// updateStatus applies mutate to pg's status and writes it through the status subresource
// when it changed. On a conflict it re-reads the Postgres and applies mutate again, so it only
// ever changes what mutate changes (the ops-manager writes the Paused condition).
func (c *Controller) updateStatus(ctx context.Context, pg *kubedbv1.Postgres, mutate func(*kubedbv1.PostgresStatus)) (*kubedbv1.Postgres, error) {
	postgreses := c.pgopsClient.KubedbV1().Postgreses(pg.Namespace)
	out, err := c.writePostgres(ctx, pg, func(next *kubedbv1.Postgres) bool {
		before := next.Status.DeepCopy()
		mutate(&next.Status)
		return !equality.Semantic.DeepEqual(*before, next.Status)
	}, postgreses.UpdateStatus)
	if err != nil {
		return pg, fmt.Errorf("updating status of postgres %s/%s: %w", pg.Namespace, pg.Name, err)
	}
	return out, nil
}

// updatePostgres applies mutate (which reports whether it changed anything) to pg and
// updates it, retrying on conflicts against a fresh copy.
func (c *Controller) updatePostgres(ctx context.Context, pg *kubedbv1.Postgres, mutate func(*kubedbv1.Postgres) bool) (*kubedbv1.Postgres, error) {
	out, err := c.writePostgres(ctx, pg, mutate, c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).Update)
	if err != nil {
		return pg, fmt.Errorf("updating postgres %s/%s: %w", pg.Namespace, pg.Name, err)
	}
	return out, nil
}

// writePostgres applies mutate to a copy of pg and, when it changed something, writes it
// with write (Update or UpdateStatus); on a conflict it re-reads the object and tries
// again, so a field another writer owns (the ops-manager's Paused condition) is never lost.
func (c *Controller) writePostgres(ctx context.Context, pg *kubedbv1.Postgres, mutate func(*kubedbv1.Postgres) bool,
	write func(context.Context, *kubedbv1.Postgres, metav1.UpdateOptions) (*kubedbv1.Postgres, error)) (*kubedbv1.Postgres, error) {
	cur, out := pg, pg
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		next := cur.DeepCopy()
		if !mutate(next) {
			out = cur
			return nil
		}
		updated, err := write(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
		if err == nil {
			c.written.Remember(next.ResourceVersion, updated)
		}
		if apierrors.IsConflict(err) {
			fresh, gerr := c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
			if gerr != nil {
				return gerr
			}
			cur = fresh
		}
		if err != nil {
			return err
		}
		out = updated
		return nil
	})
	return out, err
}

// serviceLag bounds how long after its primary pod turned Ready a database whose primary
// Service cannot be reached is looked at again every second or so (the health cache's
// TTL), rather than a status period later.
const serviceLag = 30 * time.Second

// recheckJustReadyPrimary asks for another look soon when the primary pod turned Ready a
// moment ago but its Service does not reach it: a Service follows a pod's readiness a
// moment later (the endpoint slice controller, then kube-proxy on every node: a second or
// two), and the pod's Ready event is what started this check. Without it the phase would
// stay NotReady for a whole status period after every start and restart.
func (c *Controller) recheckJustReadyPrimary(pg *kubedbv1.Postgres, pods []*corev1.Pod, err error) {
	if credential.Classify(err) != credential.ClassUnreachable {
		return
	}
	for _, p := range pods {
		if podOrdinal(pg, p) != 0 {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && c.now().Sub(cond.LastTransitionTime.Time) < serviceLag {
				c.queue.AddAfter(cache.MetaObjectToName(pg), time.Second)
			}
		}
	}
}
