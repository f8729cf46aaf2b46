package provisioner

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func TestStatusPhases(t *testing.T) {
	provisioned := withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue)
	for name, tc := range map[string]struct {
		provisioned bool
		replicas    int32
		ready       []bool // per ordinal
		primaryErr  error
		// notStreaming are standbys missing from the primary's pg_stat_replication.
		notStreaming []string
		phase        kubedbv1.DatabasePhase
		conds        map[string]metav1.ConditionStatus
	}{
		"first time all up": {
			replicas: 2, ready: []bool{true, true},
			phase: kubedbv1.DatabasePhaseReady,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionProvisioningStarted: metav1.ConditionTrue,
				kubedbv1.ConditionReplicaReady:        metav1.ConditionTrue,
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionTrue,
				kubedbv1.ConditionReady:               metav1.ConditionTrue,
				kubedbv1.ConditionProvisioned:         metav1.ConditionTrue,
			},
		},
		"not yet up": {
			replicas: 2, ready: []bool{true, false},
			phase: kubedbv1.DatabasePhaseProvisioning,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionReplicaReady:        metav1.ConditionFalse,
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionTrue,
				kubedbv1.ConditionReady:               metav1.ConditionFalse,
				kubedbv1.ConditionProvisioned:         metav1.ConditionFalse,
			},
		},
		"not yet accepting": {
			replicas: 1, ready: []bool{true}, primaryErr: errors.New("primary 10.0.0.1:5432 unreachable"),
			phase: kubedbv1.DatabasePhaseProvisioning,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionFalse,
				kubedbv1.ConditionProvisioned:         metav1.ConditionFalse,
			},
		},
		"ready again": {
			provisioned: true, replicas: 3, ready: []bool{true, true, true},
			phase: kubedbv1.DatabasePhaseReady,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionReady:       metav1.ConditionTrue,
				kubedbv1.ConditionProvisioned: metav1.ConditionTrue,
			},
		},
		"standby down is critical": {
			provisioned: true, replicas: 3, ready: []bool{true, true, false},
			phase: kubedbv1.DatabasePhaseCritical,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionReplicaReady:        metav1.ConditionFalse,
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionTrue,
				kubedbv1.ConditionReady:               metav1.ConditionFalse,
				kubedbv1.ConditionProvisioned:         metav1.ConditionTrue,
			},
		},
		// A standby whose pod is Ready but whose replication broke (a credential it cannot
		// use any more) is not Ready: the phase tells the truth about replication.
		"standby not streaming is critical": {
			provisioned: true, replicas: 3, ready: []bool{true, true, true}, notStreaming: []string{"x-1"},
			phase: kubedbv1.DatabasePhaseCritical,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionReplicaReady:        metav1.ConditionFalse,
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionTrue,
				kubedbv1.ConditionReady:               metav1.ConditionFalse,
			},
		},
		"standby pod missing is critical": {
			provisioned: true, replicas: 2, ready: []bool{true},
			phase: kubedbv1.DatabasePhaseCritical,
		},
		"primary refusing is not ready": {
			provisioned: true, replicas: 2, ready: []bool{true, true}, primaryErr: errors.New("primary rejected the credential"),
			phase: kubedbv1.DatabasePhaseNotReady,
			conds: map[string]metav1.ConditionStatus{
				kubedbv1.ConditionAcceptingConnection: metav1.ConditionFalse,
				kubedbv1.ConditionReady:               metav1.ConditionFalse,
				kubedbv1.ConditionProvisioned:         metav1.ConditionTrue,
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			mut := []func(*kubedbv1.Postgres){withFinalizer, withReplicas(tc.replicas), withAuthSecret("x-auth")}
			if tc.provisioned {
				mut = append(mut, provisioned)
			}
			pg := newPG("x", mut...)
			objs := []runtime.Object{generatedSecretFor(pg), recordFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias)}
			for i, r := range tc.ready {
				objs = append(objs, readyPod(pg, i, r))
			}
			f := newFixture(t, []*kubedbv1.Postgres{pg}, objs...)
			f.health.err = tc.primaryErr
			f.health.notStreaming = map[string]bool{}
			for _, name := range tc.notStreaming {
				f.health.notStreaming[name] = true
			}
			require.NoError(t, f.sync("x"))
			got := f.postgres("x")
			for _, name := range tc.notStreaming {
				assert.Contains(t, condition(got, kubedbv1.ConditionReplicaReady).Message, "not streaming from the primary: "+name)
				assert.Equal(t, ReasonStandbyNotStreaming, condition(got, kubedbv1.ConditionReplicaReady).Reason)
			}
			assert.Equal(t, tc.phase, got.Status.Phase)
			for typ, want := range tc.conds {
				c := condition(got, typ)
				require.NotNil(t, c, typ)
				assert.Equal(t, want, c.Status, typ)
				assert.Equal(t, int64(1), c.ObservedGeneration, typ)
			}
			if tc.primaryErr != nil {
				assert.Equal(t, tc.primaryErr.Error(), condition(got, kubedbv1.ConditionAcceptingConnection).Message)
			}
			require.Len(t, f.health.calls, 1)
			assert.Equal(t, "x", f.health.calls[0].Service.Name)
		})
	}
}

func TestStatusPhaseChangeEvents(t *testing.T) {
	pg := newPG("x", withFinalizer, withAuthSecret("x-auth"))
	f := newFixture(t, []*kubedbv1.Postgres{pg}, generatedSecretFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias), readyPod(pg, 0, true))
	f.mustSync("x")
	assert.Equal(t, kubedbv1.DatabasePhaseReady, f.postgres("x").Status.Phase)

	f.refresh()
	f.health.err = errors.New("primary 10.0.0.1:5432 unreachable: dial tcp: connection refused")
	f.later(healthTTL) // the last check no longer answers for the database
	f.mustSync("x")
	assert.Equal(t, kubedbv1.DatabasePhaseNotReady, f.postgres("x").Status.Phase)
	assert.True(t, f.hasEvent("Warning", ReasonPhaseChanged, "from Ready to NotReady"), "events: %v", f.events)

	f.refresh()
	f.health.err = nil
	f.later(healthTTL)
	f.mustSync("x")
	assert.Equal(t, kubedbv1.DatabasePhaseReady, f.postgres("x").Status.Phase)
	assert.True(t, f.hasEvent("Normal", ReasonPhaseChanged, "from NotReady to Ready"))
}

// A burst of syncs (a rotation wakes a database a dozen times) logs in once; a change of
// what the check depends on, or its age, checks again.
func TestHealthCheckAnswersForABurstOfSyncs(t *testing.T) {
	pg := newPG("x", withFinalizer, withAuthSecret("x-auth"))
	f := newFixture(t, []*kubedbv1.Postgres{pg}, generatedSecretFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias), readyPod(pg, 0, true))
	f.mustSync("x")
	f.refresh()
	calls := len(f.health.calls)
	for i := 0; i < 5; i++ {
		f.mustSync("x")
	}
	assert.Equal(t, calls, len(f.health.calls), "the same inputs within healthTTL: no new login")

	f.later(healthTTL)
	f.mustSync("x")
	assert.Equal(t, calls+1, len(f.health.calls), "an older check is not reused")

	replaced := readyPod(pg, 0, true)
	replaced.UID = "a-new-pod"
	require.NoError(t, f.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), replaced, testNS))
	f.refresh()
	f.mustSync("x")
	assert.Equal(t, calls+2, len(f.health.calls), "another pod: checked again at once")
}

// generatedSecretFor is "<name>-auth" as the provisioner creates it.
// recordFor is the credential record the provisioner made for pg, holding
// generatedSecretFor's credential.
func recordFor(pg *kubedbv1.Postgres) runtime.Object {
	s := userSecret(credentialRecordName(pg), map[string]string{"username": "postgres", "password": "generated-pw"})
	s.Labels = kubedbv1.CredentialRecordLabels(pg.Name)
	s.Annotations = map[string]string{kubedbv1.RecordDatabaseUIDAnnotation: string(pg.UID)}
	return s
}

func generatedSecretFor(pg *kubedbv1.Postgres) runtime.Object {
	s := userSecret(authSecretName(pg), map[string]string{"username": "postgres", "password": "generated-pw"})
	s.Labels = ownedLabels(pg)
	s.OwnerReferences = append(s.OwnerReferences, ownerRef(pg))
	return s
}

// A Service reaches a pod a moment after the pod turns Ready (the endpoint slice, then
// kube-proxy): a primary whose pod has just turned Ready but whose Service refuses is
// looked at again within a second or two, not a status period (here an hour) later. One
// that has been Ready for long is not: its Service is broken, and the status says so.
func TestJustReadyPrimaryBehindItsServiceIsRecheckedSoon(t *testing.T) {
	for name, tc := range map[string]struct {
		readyFor time.Duration
		soon     bool
	}{
		"ready a second ago": {readyFor: time.Second, soon: true},
		"ready for a minute": {readyFor: time.Minute, soon: false},
	} {
		t.Run(name, func(t *testing.T) {
			pg := newPG("x", withFinalizer, withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue))
			pod := readyPod(pg, 0, true)
			now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) // the fixture's clock
			pod.Status.Conditions[0].LastTransitionTime = metav1.NewTime(now.Add(-tc.readyFor))
			f := newFixture(t, []*kubedbv1.Postgres{pg}, generatedSecretFor(pg), recordFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias), pod)
			for f.c.queue.Len() > 0 {
				key, _ := f.c.queue.Get()
				f.c.queue.Forget(key)
				f.c.queue.Done(key)
			}
			f.health.err = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			f.mustSync("x")
			assert.Equal(t, kubedbv1.DatabasePhaseNotReady, f.postgres("x").Status.Phase)
			if tc.soon {
				require.Eventually(t, func() bool { return f.c.queue.Len() == 1 }, 10*time.Second, 20*time.Millisecond,
					"requeued within about a second")
				return
			}
			time.Sleep(1500 * time.Millisecond) // past when a recheck would be queued
			assert.Zero(t, f.c.queue.Len(), "left to the status period")
		})
	}
}
