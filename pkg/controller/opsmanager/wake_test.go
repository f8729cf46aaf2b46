package opsmanager

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

func TestStandbysThatDoNotStreamAfterThePrimaryRestartAreWoken(t *testing.T) {
	w := newWorld(t, 3)
	w.keepRunning()
	// After the restarts the standbys wait for their next retry of the primary; a wake
	// makes each try at once.
	w.db.standbys, w.db.streamOnWake = 0, true
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 50)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.ElementsMatch(t, []string{"pg-1", "pg-2"}, w.db.wakes, "each standby is woken once")
}

func TestStreamingStandbysAreNotWoken(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 50)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Empty(t, w.db.wakes)
}

func TestAStandbyThatCannotStreamIsWokenAFewTimesOnly(t *testing.T) {
	w := newWorld(t, 3)
	w.keepRunning()
	w.db.standbys = 0 // and a wake does not help
	w.newRequest("rotate")
	for i := 0; i < 40; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
		w.clock.Step(100 * time.Millisecond)
	}
	req := w.request("rotate")
	assert.Equal(t, opsv1alpha1.OpsRequestPhaseProgressing, req.Status.Phase, describe(req))
	assert.Contains(t, describe(req), "waiting for standbys to stream from the primary (0 of 2 streaming)")
	counts := map[string]int{}
	for _, name := range w.db.wakes {
		counts[name]++
	}
	assert.Equal(t, map[string]int{"pg-1": maxStandbyWakes, "pg-2": maxStandbyWakes}, counts,
		"then the standby's own retry takes over: no reload per poll")
}

func TestWakesAreSpacedAndForgottenWithTheRequest(t *testing.T) {
	var wakes standbyWakes
	now := time.Unix(1000, 0)
	assert.True(t, wakes.take("u", "pg-1", now))
	assert.False(t, wakes.take("u", "pg-1", now.Add(standbyWakeSpacing/2)), "too soon after the last")
	assert.True(t, wakes.take("u", "pg-2", now), "another standby has its own count")
	assert.True(t, wakes.take("u", "pg-1", now.Add(standbyWakeSpacing)))
	assert.True(t, wakes.take("u", "pg-1", now.Add(2*standbyWakeSpacing)))
	assert.False(t, wakes.take("u", "pg-1", now.Add(time.Hour)), "at most maxStandbyWakes")
	assert.True(t, wakes.take("v", "pg-1", now), "another request has its own count")
	wakes.forget("u")
	assert.True(t, wakes.take("u", "pg-1", now.Add(time.Hour)))
}

func TestStandbysAreWokenOnlyAfterThePrimaryRestartedAndOnlyWhenHot(t *testing.T) {
	for name, tc := range map[string]struct {
		mode opsv1alpha1.RestartMode
		warm bool
	}{
		"StandbysOnly: a restarted standby connects as it starts": {mode: opsv1alpha1.RestartStandbysOnly},
		"Warm standbys accept no login":                           {mode: opsv1alpha1.RestartAllPods, warm: true},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 3)
			if tc.warm {
				pg := w.postgres()
				pg.Spec.StandbyMode = ptr.To(kubedbv1.StandbyModeWarm)
				_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
				require.NoError(t, err)
			}
			w.db.standbys = 0
			w.newRequest("rotate", withRestart(tc.mode))
			for i := 0; i < 30; i++ {
				_, err := w.sync("rotate")
				require.NoError(t, err)
				w.clock.Step(time.Second)
			}
			req := w.request("rotate")
			require.Contains(t, describe(req), "waiting for standbys to stream", describe(req))
			assert.Empty(t, w.db.wakes)
		})
	}
}
