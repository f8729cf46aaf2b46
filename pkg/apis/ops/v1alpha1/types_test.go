package v1alpha1_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pgops/pgops/pkg/apis/apitest"
	"github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

func TestPostgresOpsRequestDeepCopy(t *testing.T) {
	apitest.DeepCopyIsIndependent(t, func() runtime.Object { return &v1alpha1.PostgresOpsRequest{} })
	apitest.DeepCopyIsIndependent(t, func() runtime.Object { return &v1alpha1.PostgresOpsRequestList{} })
}

func TestPostgresOpsRequestJSONRoundTrip(t *testing.T) {
	req := &v1alpha1.PostgresOpsRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: "ops.kubedb.com/v1alpha1", Kind: "PostgresOpsRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: "rotate", Namespace: "demo"},
		Spec: v1alpha1.PostgresOpsRequestSpec{
			Type:           v1alpha1.OpsRequestTypeRotateAuth,
			DatabaseRef:    v1alpha1.DatabaseReference{Name: "ha-postgres"},
			Authentication: &v1alpha1.AuthSpec{SecretRef: &v1alpha1.SecretReference{Kind: "Secret", Name: "user-auth"}},
			Timeout:        &metav1.Duration{Duration: 5 * time.Minute},
			Apply:          v1alpha1.ApplyOptionIfReady,
		},
		Status: v1alpha1.OpsRequestStatus{
			Phase:              v1alpha1.OpsRequestPhaseProgressing,
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{{
				Type: "RotateAuth", Status: metav1.ConditionTrue, Reason: "Started",
				LastTransitionTime: metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
			}},
		},
	}
	apitest.JSONRoundTrip(t, req, func() runtime.Object { return &v1alpha1.PostgresOpsRequest{} })
}

// The RotateAuth manifest from KubeDB's guide decodes with the same meaning.
func TestPostgresOpsRequestDecodesKubeDBManifest(t *testing.T) {
	manifest := `{
	  "apiVersion": "ops.kubedb.com/v1alpha1", "kind": "PostgresOpsRequest",
	  "metadata": {"name": "pgops-rotate-auth-user", "namespace": "demo"},
	  "spec": {"type": "RotateAuth", "databaseRef": {"name": "ha-postgres"},
	           "authentication": {"secretRef": {"kind": "Secret", "name": "pg-user-auth"}},
	           "timeout": "5m", "apply": "Always"}
	}`
	var req v1alpha1.PostgresOpsRequest
	require.NoError(t, json.Unmarshal([]byte(manifest), &req))
	assert.Equal(t, v1alpha1.OpsRequestTypeRotateAuth, req.Spec.Type)
	assert.Equal(t, "ha-postgres", req.Spec.DatabaseRef.Name)
	assert.Equal(t, "pg-user-auth", req.Spec.Authentication.SecretRef.Name)
	assert.Equal(t, 5*time.Minute, req.Spec.Timeout.Duration)
	assert.Equal(t, v1alpha1.ApplyOptionAlways, req.Spec.Apply)
}
