package v1_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/apis/apitest"
	v1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func TestPostgresDeepCopy(t *testing.T) {
	apitest.DeepCopyIsIndependent(t, func() runtime.Object { return &v1.Postgres{} })
	apitest.DeepCopyIsIndependent(t, func() runtime.Object { return &v1.PostgresList{} })
}

func TestPostgresJSONRoundTrip(t *testing.T) {
	activeFrom := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	pg := &v1.Postgres{
		TypeMeta:   metav1.TypeMeta{APIVersion: "kubedb.com/v1", Kind: "Postgres"},
		ObjectMeta: metav1.ObjectMeta{Name: "ha-postgres", Namespace: "demo"},
		Spec: v1.PostgresSpec{
			Version:       "16.4",
			Replicas:      ptr.To[int32](3),
			StandbyMode:   ptr.To(v1.StandbyModeHot),
			StreamingMode: ptr.To(v1.StreamingModeAsynchronous),
			StorageType:   v1.StorageTypeDurable,
			Storage: &corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To("standard"),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: resource.MustParse("1Gi"),
				}},
			},
			AuthSecret: &v1.SecretReference{
				Name: "ha-postgres-auth", Kind: "Secret", ExternallyManaged: true,
				ActiveFrom: &activeFrom, RotateAfter: &metav1.Duration{Duration: time.Hour},
			},
			DeletionPolicy: v1.DeletionPolicyWipeOut,
			PodTemplate: v1.PodTemplateSpec{Spec: v1.PodSpec{
				Containers: []v1.ContainerSpec{{Name: "postgres", Env: []corev1.EnvVar{{Name: "TZ", Value: "UTC"}}}},
			}},
			ServiceTemplates: []v1.NamedServiceTemplateSpec{{
				Alias: v1.PrimaryServiceAlias,
				Spec:  v1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []v1.ServicePort{{Name: "db", Port: 5432, NodePort: 30432}}},
			}},
			LeaderElection: &runtime.RawExtension{Raw: []byte(`{"electionTick":10}`)},
		},
		Status: v1.PostgresStatus{
			Phase:      v1.DatabasePhaseReady,
			Conditions: []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionTrue, Reason: "AllReplicasReady", LastTransitionTime: activeFrom}},
			AuthSecret: &v1.AuthSecretStatus{LastUpdateTimestamp: &activeFrom},
		},
	}
	apitest.JSONRoundTrip(t, pg, func() runtime.Object { return &v1.Postgres{} })
}

// A manifest from KubeDB's Postgres guide decodes into the fields pgops acts on.
func TestPostgresDecodesKubeDBManifest(t *testing.T) {
	manifest := `{
	  "apiVersion": "kubedb.com/v1", "kind": "Postgres",
	  "metadata": {"name": "quick-postgres", "namespace": "demo"},
	  "spec": {
	    "version": "13.13", "replicas": 3, "standbyMode": "Hot", "streamingMode": "Asynchronous",
	    "authSecret": {"name": "quick-postgres-auth", "externallyManaged": true},
	    "storageType": "Durable",
	    "storage": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
	                "resources": {"requests": {"storage": "1Gi"}}},
	    "podTemplate": {"spec": {"containers": [{"name": "postgres",
	        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}},
	    "leaderElection": {"electionTick": 10, "heartbeatTick": 1},
	    "deletionPolicy": "DoNotTerminate"
	  }
	}`
	var pg v1.Postgres
	require.NoError(t, json.Unmarshal([]byte(manifest), &pg))
	assert.Equal(t, "13.13", pg.Spec.Version)
	assert.Equal(t, int32(3), *pg.Spec.Replicas)
	assert.Equal(t, "quick-postgres-auth", pg.Spec.AuthSecret.Name)
	assert.True(t, pg.Spec.AuthSecret.ExternallyManaged)
	assert.Equal(t, v1.DeletionPolicyDoNotTerminate, pg.Spec.DeletionPolicy)
	assert.Equal(t, "500m", pg.Spec.PodTemplate.Spec.Containers[0].Resources.Requests.Cpu().String())
	assert.JSONEq(t, `{"electionTick": 10, "heartbeatTick": 1}`, string(pg.Spec.LeaderElection.Raw))
}
