package dbaddr

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseMode(t *testing.T) {
	m, err := ParseMode("ClusterIP")
	require.NoError(t, err)
	assert.Equal(t, ModeClusterIP, m)
	m, err = ParseMode("DNS")
	require.NoError(t, err)
	assert.Equal(t, ModeDNS, m)
	for _, bad := range []string{"clusterip", "", "IP"} {
		_, err = ParseMode(bad)
		assert.Error(t, err, bad)
	}
}

func TestPrimaryTarget(t *testing.T) {
	svc := func(clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: "demo"},
			Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports}}
	}
	primary := corev1.ServicePort{Name: "primary", Port: 6432}
	other := corev1.ServicePort{Name: "metrics", Port: 9187}

	host, port, err := PrimaryTarget(ModeClusterIP, svc("10.0.0.7", other, primary))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.7", host)
	assert.Equal(t, 6432, port)

	host, port, err = PrimaryTarget(ModeDNS, svc("", corev1.ServicePort{Name: "postgres", Port: 5433}))
	require.NoError(t, err, "DNS mode needs no ClusterIP")
	assert.Equal(t, "pg.demo.svc", host)
	assert.Equal(t, 5433, port)

	_, port, err = PrimaryTarget("", svc("10.0.0.7", other))
	require.NoError(t, err, "the zero mode is ClusterIP")
	assert.Equal(t, 9187, port, "without a named port, the first")
	_, port, _ = PrimaryTarget(ModeClusterIP, svc("10.0.0.7"))
	assert.Equal(t, 5432, port)

	for _, ip := range []string{"", corev1.ClusterIPNone} {
		_, _, err = PrimaryTarget(ModeClusterIP, svc(ip, primary))
		assert.ErrorContains(t, err, "has no ClusterIP yet")
	}
}

func TestPodTarget(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-1", Namespace: "demo"},
		Spec: corev1.PodSpec{Hostname: "pg-1", Subdomain: "pg-pods", Containers: []corev1.Container{{
			Name: "postgres", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9187}, {Name: "db", ContainerPort: 5433}},
		}}},
		Status: corev1.PodStatus{PodIP: "10.0.0.7"},
	}
	host, port, err := PodTarget(ModeClusterIP, pod)
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.7", host)
	assert.Equal(t, 5433, port)
	host, _, err = PodTarget(ModeDNS, pod)
	require.NoError(t, err)
	assert.Equal(t, "pg-1.pg-pods.demo.svc", host)

	pod.Status.PodIP, pod.Spec.Subdomain = "", ""
	_, _, err = PodTarget(ModeClusterIP, pod)
	assert.ErrorContains(t, err, "has no IP yet")
	_, _, err = PodTarget(ModeDNS, pod)
	assert.ErrorContains(t, err, "no hostname")
}
