package opsmanager

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

func withRestart(mode opsv1alpha1.RestartMode) func(*opsv1alpha1.PostgresOpsRequest) {
	return func(r *opsv1alpha1.PostgresOpsRequest) {
		r.Spec.RotateAuth = &opsv1alpha1.RotateAuthOptions{Restart: mode}
	}
}

func TestPlanPodsPerRestartMode(t *testing.T) {
	type plan struct{ restart, repoint, kept []string }
	cases := []struct {
		name     string
		mode     opsv1alpha1.RestartMode
		replicas int32
		mutate   func(*kubedbv1.Postgres, *opsv1alpha1.RotateAuthPlan)
		want     plan
		note     string
	}{
		{name: "AllPods restarts standbys from the highest ordinal, then the primary", mode: opsv1alpha1.RestartAllPods, replicas: 3,
			want: plan{restart: []string{"pg-2", "pg-1", "pg-0"}}},
		{name: "unset means AllPods", mode: "", replicas: 2, want: plan{restart: []string{"pg-1", "pg-0"}}},
		{name: "AllPods keeps an Ephemeral primary", mode: opsv1alpha1.RestartAllPods, replicas: 2,
			mutate: func(_ *kubedbv1.Postgres, p *opsv1alpha1.RotateAuthPlan) {
				p.StorageType = string(kubedbv1.StorageTypeEphemeral)
			},
			want: plan{restart: []string{"pg-1"}, kept: []string{"pg-0"}}},
		{name: "StandbysOnly keeps the primary", mode: opsv1alpha1.RestartStandbysOnly, replicas: 3,
			want: plan{restart: []string{"pg-2", "pg-1"}, kept: []string{"pg-0"}}},
		{name: "StandbysOnly on one replica restarts nothing", mode: opsv1alpha1.RestartStandbysOnly, replicas: 1,
			want: plan{kept: []string{"pg-0"}}},
		{name: "None re-points hot standbys", mode: opsv1alpha1.RestartNone, replicas: 3,
			want: plan{repoint: []string{"pg-2", "pg-1"}, kept: []string{"pg-0"}}},
		{name: "None on one replica restarts nothing", mode: opsv1alpha1.RestartNone, replicas: 1,
			want: plan{kept: []string{"pg-0"}}},
		{name: "None restarts Warm standbys", mode: opsv1alpha1.RestartNone, replicas: 2,
			mutate: func(pg *kubedbv1.Postgres, _ *opsv1alpha1.RotateAuthPlan) {
				pg.Spec.StandbyMode = ptr.To(kubedbv1.StandbyModeWarm)
			},
			want: plan{restart: []string{"pg-1"}, kept: []string{"pg-0"}}, note: "Warm"},
		{name: "None restarts standbys whose pods name another Secret", mode: opsv1alpha1.RestartNone, replicas: 2,
			mutate: func(_ *kubedbv1.Postgres, p *opsv1alpha1.RotateAuthPlan) { p.TargetSecret = "mine" },
			want:   plan{restart: []string{"pg-1"}, kept: []string{"pg-0"}}, note: "name Secret pg-auth"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pg := &kubedbv1.Postgres{ObjectMeta: metav1.ObjectMeta{Name: dbName}, Spec: kubedbv1.PostgresSpec{Replicas: ptr.To(tc.replicas)}}
			p := &opsv1alpha1.RotateAuthPlan{CurrentSecret: "pg-auth", TargetSecret: "pg-auth",
				StorageType: string(kubedbv1.StorageTypeDurable), RestartMode: restartMode(&opsv1alpha1.PostgresOpsRequest{
					Spec: opsv1alpha1.PostgresOpsRequestSpec{RotateAuth: &opsv1alpha1.RotateAuthOptions{Restart: tc.mode}}})}
			if tc.mutate != nil {
				tc.mutate(pg, p)
			}
			planPods(p, pg, ptr.Deref(pg.Spec.Replicas, 1))
			assert.Equal(t, tc.want, plan{restart: p.RestartPods, repoint: p.RepointPods, kept: p.KeptPods})
			if tc.note != "" {
				require.Len(t, p.Notes, 1)
				assert.Contains(t, p.Notes[0], tc.note)
			} else {
				assert.Empty(t, p.Notes)
			}
		})
	}
}

func TestStandbysOnlyNeverRestartsThePrimary(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartStandbysOnly))
	req := w.runUntilDone("rotate", 50)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, []string{"pg-2", "pg-1"}, w.evictions())
	assert.Equal(t, opsv1alpha1.RestartStandbysOnly, req.Status.RotateAuth.RestartMode)
	msg := condition(req, ConditionRestartNodes).Message
	assert.Contains(t, msg, "restart mode StandbysOnly: restarted pg-2, pg-1; kept pg-0 running: the primary does not need a restart")
	assert.Contains(t, msg, "the old credential is refused")
	assert.Equal(t, string(w.secret(dbName + "-auth").Data["password"]), w.db.password(superuser))
}

// Every sync runs on a freshly started controller (world.sync), so this also shows that a
// restart at any point of a re-point repeats nothing already done.
func TestNoneRestartsNoPodAndRepointsStandbys(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	req := w.runUntilDone("rotate", 60)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Empty(t, w.evictions(), "no pod is restarted")
	newPassword := string(w.secret(dbName + "-auth").Data["password"])
	for _, pod := range []string{"pg-1", "pg-2"} {
		assert.Equal(t, newPassword, w.db.passfile(pod), "standby %s has the new credential", pod)
		assert.True(t, isTrue(req.Status.Conditions, perPodCondition(ConditionRepointStandby, pod)), describe(req))
	}
	assert.Equal(t, 2, w.db.passfileWrites, "each passfile is written once")
	assert.Equal(t, 2, w.db.reconnects, "each standby is reconnected once")
	assert.Nil(t, condition(req, ConditionCheckPodReady), "no pod restarted, so none waited for")
	msg := condition(req, ConditionRestartNodes).Message
	assert.Contains(t, msg, "restart mode None: restarted no pod; gave the running standbys pg-2, pg-1 the new credential without a restart; kept pg-0 running")
	w.assertNoSecretsLeaked(oldPassword, newPassword)
}

func TestNoneOnOneReplicaTouchesNoPod(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	req := w.runUntilDone("rotate", 30)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Empty(t, w.evictions())
	assert.Zero(t, w.db.passfileWrites)
}

func TestNoneToAUserSecretRestartsTheStandbys(t *testing.T) {
	w := newWorld(t, 3)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.newRequest("rotate", userProvided("mine"), withRestart(opsv1alpha1.RestartNone))
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, []string{"pg-2", "pg-1"}, w.evictions(), "standbys restart, the primary does not")
	assert.Contains(t, condition(req, ConditionRestartNodes).Message, "their pods name Secret pg-auth")
}

func TestOldPasswordStillStoredFailsTheRotation(t *testing.T) {
	w := newWorld(t, 1)
	w.db.oldPasswordStored = true
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	req := w.runUntilDone("rotate", 30)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Equal(t, ReasonOldCredentialAccepted, condition(req, ConditionFailed).Reason, describe(req))
	assert.NotContains(t, describe(req), oldPassword)
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "the database is resumed")
}

// With a trust rule in pg_hba.conf every password logs in, the old one too: what PostgreSQL
// has is read from pg_authid, so the rotation succeeds, and says that the old password's
// refusal cannot be checked instead of claiming it.
func TestTrustRuleDoesNotFailTheRotationAndIsNamed(t *testing.T) {
	w := newWorld(t, 1)
	w.db.acceptAnyPassword = true
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	req := w.runUntilDone("rotate", 30)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Contains(t, condition(req, ConditionRestartNodes).Message, "cannot be checked")
	assert.NotEqual(t, oldPassword, w.db.password(superuser))
	w.requireCredentialWorks()
}

// A None request deleted after one standby was re-pointed (the other had not replayed the
// new password yet) still re-points the other in its cleanup: its next reconnect would
// otherwise fail.
func TestNoneDeletedMidwayRepointsTheRest(t *testing.T) {
	w := newWorld(t, 3)
	w.db.notReplayed[podIPPrefix+"pg-1"] = true
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return isTrue(r.Status.Conditions, perPodCondition(ConditionRepointStandby, "pg-2"))
	})
	newPassword := string(w.secret(dbName + "-auth").Data["password"])
	require.Equal(t, 1, w.db.reconnects, "pg-1 is not re-pointed yet")
	w.db.mu.Lock()
	w.db.notReplayed[podIPPrefix+"pg-1"] = false
	w.db.mu.Unlock()
	w.deleteAndCleanUp("rotate")
	assert.Equal(t, newPassword, w.db.passfile("pg-1"))
	assert.Equal(t, 2, w.db.reconnects)
	assert.Empty(t, w.evictions())
	w.requireCredentialWorks()
}

// A rotation pgops created for a change of spec.authSecret.name that the user changed
// again since is refused before anything is touched.
func TestRotationForAnAuthSecretChangedAgainIsRefused(t *testing.T) {
	w := newWorld(t, 1)
	w.userSecret("from-git", map[string]string{"username": superuser, "password": "From-Git-Password-1"})
	w.newRequest("rotate", userProvided("from-git"), func(r *opsv1alpha1.PostgresOpsRequest) {
		r.Labels = map[string]string{opsv1alpha1.LabelTrigger: opsv1alpha1.TriggerAuthSecretChanged}
	})
	req := w.runUntilDone("rotate", 20)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Contains(t, condition(req, ConditionFailed).Message, "names pg-auth now, not from-git")
	assert.Equal(t, oldPassword, w.db.password(superuser))
}

// Publishing to the user's Secret changes only the reference in spec.authSecret: the
// schedule and the restart mode of later rotations stay.
func TestUserRotationKeepsTheRestOfSpecAuthSecret(t *testing.T) {
	w := newWorld(t, 1)
	pg := w.postgres()
	pg.Spec.AuthSecret.RotateAfter = &metav1.Duration{Duration: time.Hour}
	pg.Spec.AuthSecret.RotationRestart = string(opsv1alpha1.RestartNone)
	_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 30)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	ref := w.postgres().Spec.AuthSecret
	assert.Equal(t, "mine", ref.Name)
	assert.True(t, ref.ExternallyManaged)
	assert.Equal(t, time.Hour, ref.RotateAfter.Duration)
	assert.Equal(t, string(opsv1alpha1.RestartNone), ref.RotationRestart)
	assert.Equal(t, "mine", w.postgres().Status.AuthSecret.Name)
}
