package provisioner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	core "k8s.io/client-go/testing"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// TestEveryWriteHasFieldManager walks a Postgres through creation, pod labelling, scaling,
// halting and WipeOut deletion and checks that every create, update and patch names the
// provisioner's field manager.
func TestEveryWriteHasFieldManager(t *testing.T) {
	pg := newPG("x", withReplicas(2))
	f := newFixture(t, []*kubedbv1.Postgres{pg}, readyPod(pg, 0, true), readyPod(pg, 1, false))
	var actions []core.Action
	step := func(mutate func(*kubedbv1.Postgres)) {
		if mutate != nil {
			cur := f.postgres("x")
			mutate(cur)
			_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, cur, metav1.UpdateOptions{FieldManager: FieldManager})
			require.NoError(t, err)
			f.refresh()
		}
		require.NoError(t, f.sync("x"))
		actions = append(actions, f.kube.Actions()...)
		actions = append(actions, f.pgops.Actions()...)
		f.refresh()
	}
	step(nil)
	step(withReplicas(3))
	step(func(p *kubedbv1.Postgres) { p.Spec.Halted = true })
	step(func(p *kubedbv1.Postgres) { p.Spec.Halted = false })
	step(func(p *kubedbv1.Postgres) {
		p.Spec.DeletionPolicy = kubedbv1.DeletionPolicyWipeOut
		now := metav1.Now()
		p.DeletionTimestamp = &now
	})

	n := 0
	for _, a := range actions {
		var fm string
		switch act := a.(type) {
		case core.CreateActionImpl:
			fm = act.GetCreateOptions().FieldManager
		case core.UpdateActionImpl:
			fm = act.GetUpdateOptions().FieldManager
		case core.PatchActionImpl:
			fm = act.GetPatchOptions().FieldManager
		default:
			continue
		}
		n++
		assert.Equal(t, FieldManager, fm, "%s %s", a.GetVerb(), a.GetResource().Resource)
	}
	assert.Greater(t, n, 15)
}
