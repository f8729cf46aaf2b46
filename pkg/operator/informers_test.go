package operator

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// TestNewOwnedKubeInformerFactory checks that only labelled objects in the namespace are
// cached, without managedFields.
func TestNewOwnedKubeInformerFactory(t *testing.T) {
	secret := func(ns, name string, managed bool) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
		if managed {
			s.Labels = map[string]string{kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue}
		}
		return s
	}
	client := k8sfake.NewClientset(secret("demo", "owned", true), secret("demo", "user", false), secret("other", "owned", true))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	factory := NewOwnedKubeInformerFactory(client, &Options{Namespace: "demo"})
	lister := factory.Core().V1().Secrets().Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		require.True(t, ok, typ.String())
	}
	cached, err := lister.List(labels.Everything())
	require.NoError(t, err)
	require.Len(t, cached, 1)
	assert.Equal(t, "demo/owned", cached[0].Namespace+"/"+cached[0].Name)
	assert.Nil(t, cached[0].ManagedFields)
}
