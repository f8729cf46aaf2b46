package provisioner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// The provisioner creates RotateAuth requests by itself in three cases, and the ops-manager
// carries them out like any other (docs/architecture.md, "Rotations pgops starts"):
//   - scheduled: a generated credential is older than spec.authSecret.rotateAfter;
//   - a change of spec.authSecret.name to a Secret PostgreSQL does not accept yet: the
//     database keeps running on the Secret it has (status.authSecret.name) until the
//     rotation to the new one ends;
//   - an edit of the auth Secret in place to a credential PostgreSQL does not accept yet:
//     the pods keep booting from the credential record until the rotation to the edited
//     content ends.
//
// The condition CredentialRotation on the Postgres says what is going on: True while
// rotations go as they should, False when the user must act (with a Warning event),
// Unknown while something transient is retried.
const (
	ConditionCredentialRotation = "CredentialRotation"

	ReasonRotationScheduled       = "Scheduled"
	ReasonRotationRequested       = "RotationRequested"
	ReasonRotationFailed          = "RotationFailed"
	ReasonRotationExternal        = "ExternallyManaged"
	ReasonAuthSecretChangeRefused = "AuthSecretChangeRefused"
	ReasonAuthSecretChanged       = "AuthSecretChanged"
	ReasonAuthSecretEdited        = "AuthSecretEdited"
	ReasonAuthSecretEditRefused   = "AuthSecretEditRefused"

	// autoRequestHistory is how many ended requests pgops created keep per database.
	autoRequestHistory = 5
	// rotationRetryBase and rotationRetryMax bound the backoff after a failed scheduled
	// rotation: base × 2^(failures-1), at most max.
	rotationRetryBase = time.Minute
	rotationRetryMax  = time.Hour
)

// noRotation says that nothing about rotations concerns the database: the condition goes.
var noRotation = &rotationNote{}

// rotationNote is the CredentialRotation condition a sync wants on the Postgres: nil when
// the sync decided nothing about rotations (a paused database), noRotation for none.
type rotationNote struct {
	status  metav1.ConditionStatus
	reason  string
	message string
	// recheck asks for another look then (a due time, a retry), zero for none.
	recheck time.Duration
}

// requestsOf lists the ops requests for pg from the cache.
func (c *Controller) requestsOf(pg *kubedbv1.Postgres) []*opsv1alpha1.PostgresOpsRequest {
	objs, err := c.requestIndexer.ByIndex(requestsByDatabase, pg.Namespace+"/"+pg.Name)
	if err != nil {
		return nil
	}
	out := make([]*opsv1alpha1.PostgresOpsRequest, 0, len(objs))
	for _, obj := range objs {
		if r, ok := obj.(*opsv1alpha1.PostgresOpsRequest); ok {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreationTimestamp.Equal(&out[j].CreationTimestamp) {
			return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// requestsByDatabase indexes ops requests by "<namespace>/<spec.databaseRef.name>".
const requestsByDatabase = "byDatabase"

func indexRequestByDatabase(obj interface{}) ([]string, error) {
	r, ok := obj.(*opsv1alpha1.PostgresOpsRequest)
	if !ok {
		return nil, nil
	}
	return []string{r.Namespace + "/" + r.Spec.DatabaseRef.Name}, nil
}

// openRequest is the first request for pg that has not ended or still cleans up (its
// finalizer is held), or nil.
func openRequest(requests []*opsv1alpha1.PostgresOpsRequest) *opsv1alpha1.PostgresOpsRequest {
	for _, r := range requests {
		if !r.Status.Phase.Ended() || len(r.Finalizers) > 0 {
			return r
		}
	}
	return nil
}

// authSecretChange handles a spec.authSecret.name that differs from the Secret the database
// runs on (status.authSecret.name). It returns the credential the database uses now:
//   - the new Secret's, adopted, when it holds the credential PostgreSQL accepts as the
//     credential record keeps it (for example after a rotation to it that the ops-manager
//     finished). A login is no proof: a trust rule in pg_hba.conf accepts any password;
//   - else the running one's, while a RotateAuth to the new Secret is created and runs, or
//     while the new Secret cannot be used (the note says why).
func (c *Controller) authSecretChange(ctx context.Context, pg *kubedbv1.Postgres, rec *corev1.Secret) (*authCredential, error) {
	active, wanted := pg.ActiveAuthSecretName(), pg.Spec.AuthSecret.Name
	running, err := c.credentialNamed(ctx, pg, active)
	var ue *userError
	if errors.As(err, &ue) && rec == nil {
		// Without the credential PostgreSQL accepts, nothing can be rotated.
		return nil, &userError{reason: ue.reason, msg: fmt.Sprintf(
			"Secret %s holds the credential PostgreSQL accepts and cannot be read (%s): restore it; "+
				"spec.authSecret.name names Secret %s, which pgops rotates to once it can", active, ue.msg, wanted)}
	}
	if errors.As(err, &ue) {
		// The record keeps the credential: the old Secret is not needed any more.
		running, err = &authCredential{secretName: active, unusable: ue}, nil
	}
	if err != nil {
		return nil, err
	}
	accepted := basicAuth{user: running.user, password: running.password}
	if rec != nil {
		accepted = recordedCredential(rec)
	}
	next, err := c.credentialNamed(ctx, pg, wanted)
	if errors.As(err, &ue) {
		running.note = &rotationNote{status: metav1.ConditionFalse, reason: ReasonAuthSecretChangeRefused,
			message: fmt.Sprintf("spec.authSecret.name names Secret %s, which cannot be used: %s; the database keeps running on Secret %s", wanted, ue.msg, active)}
		return running, nil
	}
	if err != nil {
		return nil, err
	}
	if next.user != accepted.user {
		running.note = &rotationNote{status: metav1.ConditionFalse, reason: ReasonAuthSecretChangeRefused,
			message: fmt.Sprintf("spec.authSecret.name names Secret %s with username %q, but the database's is %q and cannot be changed; the database keeps running on Secret %s",
				wanted, next.user, accepted.user, active)}
		return running, nil
	}
	if next.password == accepted.password {
		next.adoptedFrom = active
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonAuthSecretAdopted, "Secret %s holds the credential PostgreSQL accepts: it is the auth Secret from now on", wanted)
		return next, nil
	}
	running.note = c.requestRotationTo(ctx, pg, active, wanted)
	return running, nil
}

// requestRotationTo makes sure a RotateAuth from active to the Secret wanted exists for this
// generation of pg, and says how it goes. Its name is derived from the Secret and the
// generation, so a failed one is not retried in a loop: changing spec.authSecret.name again,
// or deleting the request, tries again.
func (c *Controller) requestRotationTo(ctx context.Context, pg *kubedbv1.Postgres, active, wanted string) *rotationNote {
	sum := sha256.Sum256([]byte(wanted + "/" + strconv.FormatInt(pg.Generation, 10)))
	base := fmt.Sprintf("%s-rotate-to-%s", pg.Name, hex.EncodeToString(sum[:5]))
	requests := c.requestsOf(pg)
	// A request skipped because a newer one superseded it never ran: the change is tried
	// again, as "<base>-2", "<base>-3", once no request is open.
	name, attempt := base, 1
	for found := true; found; {
		found = false
		for _, r := range requests {
			if r.Name != name {
				continue
			}
			found = true
			switch r.Status.Phase {
			case opsv1alpha1.OpsRequestPhaseSkipped:
				attempt++
				name = fmt.Sprintf("%s-%d", base, attempt)
			case opsv1alpha1.OpsRequestPhaseFailed:
				return &rotationNote{status: metav1.ConditionFalse, reason: ReasonRotationFailed,
					message: fmt.Sprintf("the rotation to Secret %s (PostgresOpsRequest %s) ended %s: %s; the database keeps running on Secret %s. "+
						"Fix Secret %s and delete the request to try again", wanted, name, r.Status.Phase, endMessage(r), active, wanted)}
			default:
				return &rotationNote{status: metav1.ConditionTrue, reason: ReasonRotationRequested,
					message: fmt.Sprintf("spec.authSecret.name names Secret %s, whose credential PostgreSQL does not accept yet: rotating to it with PostgresOpsRequest %s; "+
						"the pods keep Secret %s until it ends", wanted, name, active)}
			}
			break
		}
	}
	if open := openRequest(requests); open != nil {
		return &rotationNote{status: metav1.ConditionTrue, reason: ReasonAuthSecretChanged,
			message: fmt.Sprintf("spec.authSecret.name names Secret %s; waiting for PostgresOpsRequest %s to end before rotating to it; the database keeps running on Secret %s",
				wanted, open.Name, active)}
	}
	req := c.autoRequest(pg, name, opsv1alpha1.TriggerAuthSecretChanged)
	req.Spec.Authentication = &opsv1alpha1.AuthSpec{SecretRef: &opsv1alpha1.SecretReference{Kind: "Secret", Name: wanted}}
	if err := c.createRequest(ctx, pg, req, fmt.Sprintf("spec.authSecret.name changed to Secret %s: rotating to it", wanted)); err != nil {
		return &rotationNote{status: metav1.ConditionUnknown, reason: ReasonAuthSecretChanged, recheck: c.statusPeriod,
			message: fmt.Sprintf("creating the rotation to Secret %s: %v", wanted, err)}
	}
	return &rotationNote{status: metav1.ConditionTrue, reason: ReasonRotationRequested,
		message: fmt.Sprintf("spec.authSecret.name names Secret %s, whose credential PostgreSQL does not accept yet: rotating to it with PostgresOpsRequest %s; "+
			"the pods keep Secret %s until it ends", wanted, name, active)}
}

// applySecretEdit makes sure an edit of the auth Secret that left it with another credential
// than the one PostgreSQL accepts is applied, as a RotateAuth to the Secret's own content
// that re-points the standbys without restarting them, and says how it goes. A Secret that
// cannot be used, or changes the username, is refused before anything is touched: the
// database keeps the credential it has. The request's name is derived from the Secret's
// resourceVersion, so each edit is tried once: a failed one is retried by editing again.
func (c *Controller) applySecretEdit(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential) *rotationNote {
	refused := func(format string, args ...any) *rotationNote {
		return &rotationNote{status: metav1.ConditionFalse, reason: ReasonAuthSecretEditRefused, message: fmt.Sprintf(format, args...) +
			"; the database keeps the credential it accepts (kept in Secret " + credentialRecordName(pg) + ", which the pods boot from)"}
	}
	switch {
	case cred.unusable != nil:
		return refused("Secret %s cannot be used: %s", cred.secretName, cred.unusable.msg)
	case cred.user != cred.accepted.user:
		return refused("Secret %s has username %q, but the database's is %q and cannot be changed", cred.secretName, cred.user, cred.accepted.user)
	}
	// The caches may be behind the ops-manager's own writes (the record, then the Secret, at
	// the end of a rotation): a request is created only for what the API server says now.
	live, agree, err := c.liveDisagreement(ctx, pg, cred)
	if err != nil {
		return &rotationNote{status: metav1.ConditionUnknown, reason: ReasonAuthSecretEdited, recheck: c.statusPeriod,
			message: fmt.Sprintf("reading Secret %s to apply its edit: %v", cred.secretName, err)}
	}
	if agree {
		cred.outOfSync, cred.accepted = "", live.accepted
		return noRotation
	}
	// One request per attempt at an edit, named after the database, the Secret and its
	// resourceVersion: a lagging cache or a second provisioner creates nothing twice. An
	// attempt refused for its input is not retried (editing the Secret again is); any other
	// that ended with the Secret still disagreeing (the database was not ready in time;
	// another rotation changed the credential since) is, with the scheduled rotations'
	// backoff.
	sum := sha256.Sum256([]byte(string(pg.UID) + "/" + live.secretName + "/" + live.version))
	prefix := fmt.Sprintf("%s-apply-auth-%s-", pg.Name, hex.EncodeToString(sum[:5]))
	requests := c.requestsOf(pg)
	var last *opsv1alpha1.PostgresOpsRequest
	attempts := 0
	for _, r := range requests {
		if n, err := strconv.Atoi(strings.TrimPrefix(r.Name, prefix)); err == nil && strings.HasPrefix(r.Name, prefix) && n > attempts {
			attempts, last = n, r
		}
	}
	if last != nil {
		switch {
		case !last.Status.Phase.Ended() || len(last.Finalizers) > 0:
			return &rotationNote{status: metav1.ConditionTrue, reason: ReasonAuthSecretEdited,
				message: fmt.Sprintf("Secret %s was edited: applying its credential with PostgresOpsRequest %s", live.secretName, last.Name)}
		case last.Status.Phase == opsv1alpha1.OpsRequestPhaseSkipped:
			// A newer request superseded it before it ran: nothing was tried, try at once.
		case refusedInput(last):
			return refused("applying the edit of Secret %s (PostgresOpsRequest %s) ended %s: %s. Fix the Secret to retry",
				live.secretName, last.Name, last.Status.Phase, endMessage(last))
		}
		if retryAt := endedAt(last).Add(rotationBackoff(attempts)); last.Status.Phase != opsv1alpha1.OpsRequestPhaseSkipped && c.now().Before(retryAt) {
			return &rotationNote{status: metav1.ConditionFalse, reason: ReasonAuthSecretEditRefused, recheck: retryAt.Sub(c.now()),
				message: fmt.Sprintf("applying the edit of Secret %s (PostgresOpsRequest %s) ended %s: %s; trying again at %s (attempt %d)",
					live.secretName, last.Name, last.Status.Phase, endMessage(last), formatTime(retryAt), attempts+1)}
		}
	}
	if open := openRequest(requests); open != nil {
		return &rotationNote{status: metav1.ConditionTrue, reason: ReasonAuthSecretEdited,
			message: fmt.Sprintf("Secret %s was edited: waiting for PostgresOpsRequest %s to end before applying it", live.secretName, open.Name)}
	}
	name := prefix + strconv.Itoa(attempts+1)
	req := c.autoRequest(pg, name, opsv1alpha1.TriggerAuthSecretEdited)
	req.Spec.Authentication = &opsv1alpha1.AuthSpec{SecretRef: &opsv1alpha1.SecretReference{Kind: "Secret", Name: live.secretName}}
	req.Spec.RotateAuth = &opsv1alpha1.RotateAuthOptions{Restart: opsv1alpha1.RestartNone}
	if err := c.createRequest(ctx, pg, req, fmt.Sprintf("Secret %s was edited to a credential PostgreSQL does not accept yet: applying it", live.secretName)); err != nil {
		return &rotationNote{status: metav1.ConditionUnknown, reason: ReasonAuthSecretEdited, recheck: c.statusPeriod,
			message: fmt.Sprintf("creating the request that applies the edit of Secret %s: %v", live.secretName, err)}
	}
	return &rotationNote{status: metav1.ConditionTrue, reason: ReasonAuthSecretEdited,
		message: fmt.Sprintf("Secret %s was edited: applying its credential with PostgresOpsRequest %s", live.secretName, name)}
}

// refusedInput tells whether r failed because of its input (the Secret breaks a rule,
// changes the username, is not one a request may name): trying the same input again cannot
// help.
func refusedInput(r *opsv1alpha1.PostgresOpsRequest) bool {
	cond := meta.FindStatusCondition(r.Status.Conditions, opsv1alpha1.ConditionFailed)
	if cond == nil {
		return false
	}
	switch cond.Reason {
	case "InvalidSecret", "UsernameChanged", "InvalidRequest": // the ops-manager's input reasons
		return true
	}
	return false
}

// liveDisagreement reads the auth Secret and the credential record live: live is the
// Secret's credential with the record's as accepted; agree says the two agree.
func (c *Controller) liveDisagreement(ctx context.Context, pg *kubedbv1.Postgres, cached *authCredential) (live *authCredential, agree bool, err error) {
	secrets := c.kubeClient.CoreV1().Secrets(pg.Namespace)
	rec, err := secrets.Get(ctx, credentialRecordName(pg), metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	sec, err := secrets.Get(ctx, cached.secretName, metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	if live, err = credentialFrom(sec); err != nil {
		return nil, false, err
	}
	live.accepted, live.outOfSync = recordedCredential(rec), cached.outOfSync
	return live, live.user == live.accepted.user && live.password == live.accepted.password, nil
}

// scheduleRotation creates a RotateAuth when the generated credential in use is older than
// spec.authSecret.rotateAfter, and says when the next one is due.
func (c *Controller) scheduleRotation(ctx context.Context, pg *kubedbv1.Postgres, cred *authCredential) *rotationNote {
	if pg.Spec.AuthSecret == nil || pg.Spec.AuthSecret.RotateAfter == nil || pg.Spec.AuthSecret.RotateAfter.Duration <= 0 {
		return noRotation
	}
	every := pg.Spec.AuthSecret.RotateAfter.Duration
	sec, err := c.getSecret(ctx, pg.Namespace, cred.secretName)
	if err != nil {
		return &rotationNote{status: metav1.ConditionUnknown, reason: ReasonRotationScheduled, recheck: c.statusPeriod,
			message: fmt.Sprintf("reading Secret %s to schedule its rotation: %v", cred.secretName, err)}
	}
	if pg.Spec.AuthSecret.ExternallyManaged || !isGeneratedSecret(sec, pg) {
		return &rotationNote{status: metav1.ConditionFalse, reason: ReasonRotationExternal,
			message: fmt.Sprintf("Secret %s is the user's (externallyManaged), so pgops never rotates it on a schedule; rotateAfter is ignored. "+
				"Rotate it with a PostgresOpsRequest", sec.Name)}
	}
	due := credentialSince(pg, sec).Add(every)
	now := c.now()
	requests := c.requestsOf(pg)
	if open := openRequest(requests); open != nil {
		return &rotationNote{status: metav1.ConditionTrue, reason: ReasonRotationRequested,
			message: fmt.Sprintf("PostgresOpsRequest %s is running; the credential in Secret %s fell due for rotation at %s", open.Name, sec.Name, formatTime(due))}
	}
	if now.Before(due) {
		return &rotationNote{status: metav1.ConditionTrue, reason: ReasonRotationScheduled, recheck: due.Sub(now),
			message: fmt.Sprintf("the credential in Secret %s is rotated every %s; the next rotation is due at %s", sec.Name, every, formatTime(due))}
	}

	// Attempts for this due time are numbered from the highest that still exists, so pruning
	// an old one never makes a new attempt collide with a kept one.
	dueLabel := strconv.FormatInt(due.Unix(), 10)
	var last *opsv1alpha1.PostgresOpsRequest
	attempts := 0
	for _, r := range requests {
		if r.Labels[opsv1alpha1.LabelTrigger] != opsv1alpha1.TriggerScheduled || r.Labels[opsv1alpha1.LabelRotationDue] != dueLabel {
			continue
		}
		if n, err := strconv.Atoi(r.Labels[opsv1alpha1.LabelRotationAttempt]); err == nil && n > attempts {
			attempts, last = n, r
		}
	}
	if last != nil {
		retryAt := endedAt(last).Add(rotationBackoff(attempts))
		if now.Before(retryAt) {
			return &rotationNote{status: metav1.ConditionFalse, reason: ReasonRotationFailed, recheck: retryAt.Sub(now),
				message: fmt.Sprintf("the scheduled rotation %s ended %s: %s; trying again at %s (attempt %d)",
					last.Name, last.Status.Phase, endMessage(last), formatTime(retryAt), attempts+1)}
		}
	}
	name := fmt.Sprintf("%s-rotate-auth-%s-%d", pg.Name, due.UTC().Format("20060102t150405z"), attempts+1)
	req := c.autoRequest(pg, name, opsv1alpha1.TriggerScheduled)
	req.Labels[opsv1alpha1.LabelRotationDue] = dueLabel
	req.Labels[opsv1alpha1.LabelRotationAttempt] = strconv.Itoa(attempts + 1)
	if err := c.createRequest(ctx, pg, req, fmt.Sprintf("the credential in Secret %s is older than rotateAfter (%s): rotating it", sec.Name, every)); err != nil {
		return &rotationNote{status: metav1.ConditionUnknown, reason: ReasonRotationScheduled, recheck: c.statusPeriod,
			message: fmt.Sprintf("creating the scheduled rotation: %v", err)}
	}
	return &rotationNote{status: metav1.ConditionTrue, reason: ReasonRotationRequested,
		message: fmt.Sprintf("the credential in Secret %s fell due for rotation at %s: rotating it with PostgresOpsRequest %s", sec.Name, formatTime(due), name)}
}

// credentialSince is when the credential in sec became active: its auth-active-from
// annotation, else spec.authSecret.activeFrom, else the Secret's creation; or when a rotation
// last changed the credential (status.authSecret.lastUpdateTimestamp), if that is later: an
// applied edit of the Secret writes no annotation, and restarts the clock all the same.
func credentialSince(pg *kubedbv1.Postgres, sec *corev1.Secret) time.Time {
	since := sec.CreationTimestamp.Time
	annotated, err := time.Parse(time.RFC3339, sec.Annotations[kubedbv1.AuthActiveFromAnnotation])
	switch {
	case err == nil:
		since = annotated
	case pg.Spec.AuthSecret != nil && pg.Spec.AuthSecret.ActiveFrom != nil:
		since = pg.Spec.AuthSecret.ActiveFrom.Time
	}
	if st := pg.Status.AuthSecret; st != nil && st.LastUpdateTimestamp != nil && st.LastUpdateTimestamp.After(since) {
		since = st.LastUpdateTimestamp.Time
	}
	return since
}

// rotationBackoff is how long to wait after the failures-th failed attempt.
func rotationBackoff(failures int) time.Duration {
	d := rotationRetryBase
	for i := 1; i < failures && d < rotationRetryMax; i++ {
		d *= 2
	}
	return min(d, rotationRetryMax)
}

// endedAt is when r ended: its Failed, Skipped or Successful condition's time, else its
// creation.
func endedAt(r *opsv1alpha1.PostgresOpsRequest) time.Time {
	for _, typ := range []string{opsv1alpha1.ConditionFailed, opsv1alpha1.ConditionSkipped, opsv1alpha1.ConditionSuccessful} {
		if cond := meta.FindStatusCondition(r.Status.Conditions, typ); cond != nil {
			return cond.LastTransitionTime.Time
		}
	}
	return r.CreationTimestamp.Time
}

// endMessage is what r's final condition says.
func endMessage(r *opsv1alpha1.PostgresOpsRequest) string {
	for _, typ := range []string{opsv1alpha1.ConditionFailed, opsv1alpha1.ConditionSkipped} {
		if cond := meta.FindStatusCondition(r.Status.Conditions, typ); cond != nil {
			return cond.Reason + ": " + cond.Message
		}
	}
	return "no reason given"
}

// autoRequest is a RotateAuth for pg that pgops creates by itself: owned by the Postgres
// (deleted with it), labelled with its database and trigger, in pg's chosen restart mode.
func (c *Controller) autoRequest(pg *kubedbv1.Postgres, name, trigger string) *opsv1alpha1.PostgresOpsRequest {
	labels := ownedLabels(pg)
	labels[opsv1alpha1.LabelTrigger] = trigger
	req := &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: pg.Namespace, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type:        opsv1alpha1.OpsRequestTypeRotateAuth,
			DatabaseRef: opsv1alpha1.DatabaseReference{Name: pg.Name},
			Apply:       opsv1alpha1.ApplyOptionIfReady,
		},
	}
	if mode := pg.Spec.AuthSecret.RotationRestart; mode != "" {
		req.Spec.RotateAuth = &opsv1alpha1.RotateAuthOptions{Restart: opsv1alpha1.RestartMode(mode)}
	}
	return req
}

// createRequest creates req (one that exists already is fine: the cache lagged) and says why.
func (c *Controller) createRequest(ctx context.Context, pg *kubedbv1.Postgres, req *opsv1alpha1.PostgresOpsRequest, why string) error {
	_, err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(pg.Namespace).Create(ctx, req, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Created a RotateAuth request", "request", klog.KObj(req), "trigger", req.Labels[opsv1alpha1.LabelTrigger])
	c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonRotationRequested, "%s with PostgresOpsRequest %s", why, req.Name)
	return nil
}

// pruneRequests deletes the oldest ended requests pgops created for pg beyond the last
// autoRequestHistory. A request still cleaning up (finalizer held) is never counted as ended.
func (c *Controller) pruneRequests(ctx context.Context, pg *kubedbv1.Postgres) error {
	var ended []*opsv1alpha1.PostgresOpsRequest
	for _, r := range c.requestsOf(pg) {
		if r.Labels[opsv1alpha1.LabelTrigger] != "" && r.Status.Phase.Ended() && len(r.Finalizers) == 0 && r.DeletionTimestamp == nil &&
			isOwnedBy(r, pg) {
			ended = append(ended, r)
		}
	}
	for len(ended) > autoRequestHistory {
		old := ended[0]
		ended = ended[1:]
		uid := old.UID
		err := c.pgopsClient.OpsV1alpha1().PostgresOpsRequests(pg.Namespace).Delete(ctx, old.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("pruning PostgresOpsRequest %s: %w", old.Name, err)
		}
	}
	return nil
}

// credentialNamed reads and checks the credential in Secret name.
func (c *Controller) credentialNamed(ctx context.Context, pg *kubedbv1.Postgres, name string) (*authCredential, error) {
	sec, err := c.loadSecret(ctx, pg, name)
	if err != nil {
		return nil, err
	}
	return credentialFrom(sec)
}

// applyCredentialStatus records in st the Secret the pods use and the CredentialRotation
// condition cred carries. The name is only ever set where none is recorded, or moved from
// the Secret this sync adopted from: a write of the ops-manager's in between is never undone.
func applyCredentialStatus(st *kubedbv1.PostgresStatus, cred *authCredential, generation int64, now time.Time) {
	if cred == nil {
		return
	}
	switch {
	case st.AuthSecret == nil:
		st.AuthSecret = &kubedbv1.AuthSecretStatus{Name: cred.secretName}
	case st.AuthSecret.Name == "":
		st.AuthSecret.Name = cred.secretName
	case cred.adoptedFrom != "" && st.AuthSecret.Name == cred.adoptedFrom:
		st.AuthSecret.Name = cred.secretName
	}
	switch cred.note {
	case nil:
		return
	case noRotation:
		meta.RemoveStatusCondition(&st.Conditions, ConditionCredentialRotation)
		return
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: ConditionCredentialRotation, Status: cred.note.status, Reason: cred.note.reason, Message: cred.note.message,
		ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now),
	})
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
