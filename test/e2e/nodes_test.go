package e2e

// The nodes the e2e runs on (test/kubenode) do what the tests rely on: pods from the images
// as a restricted pod runs them, volumes, Services, exec and logs through the kubelet. They
// are tested here, on the e2e's nodes, because a machine has one kube-proxy; the faults,
// which need no Services, are tested in test/kubenode beside the e2e.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pgops/pgops/pkg/podstatus"
	"github.com/pgops/pgops/test/kubenode"
)

// A PostgreSQL server from the image, on a provisioned volume, as uid 999 with a
// read-only root: reachable through a Service from the host and from a pod on the other
// node; exec and logs work through the kubelet.
func TestNodesRunThePostgresImage(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 5*time.Minute)
	ns := podNamespace(t, ctx)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	_, err := env.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{})
	require.NoError(t, err)
	script := `set -e
initdb -D /data/pgdata -U postgres --auth=trust >/dev/null
echo "listen_addresses='*'" >> /data/pgdata/postgresql.conf
echo "host all all 0.0.0.0/0 trust" >> /data/pgdata/pg_hba.conf
echo started
exec postgres -D /data/pgdata -k /var/run/postgresql`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pg", Labels: map[string]string{"app": "pg"}},
		Spec: corev1.PodSpec{
			NodeSelector:    map[string]string{corev1.LabelHostname: env.nodes.Nodes[0].Name},
			SecurityContext: kubenode.PostgresUser(),
			Containers: []corev1.Container{kubenode.Restricted(corev1.Container{
				Name: "postgres", Image: kubenode.PostgresImage, Command: []string{"bash", "-c", script},
				Ports:          []corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(5432)}}, PeriodSeconds: 1},
				VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "run", MountPath: "/var/run/postgresql"}},
			})},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}},
				{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	_, err = env.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "pg"}, Ports: []corev1.ServicePort{{Port: 5432, TargetPort: intstr.FromInt32(5432)}}},
	}
	svc, err = env.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	require.NoError(t, err)

	got := waitPod(t, ns, "pg", podstatus.Ready)
	require.True(t, strings.HasPrefix(got.Status.PodIP, "198.18."), got.Status.PodIP)

	out, err := kubenode.Exec(ctx, env.cluster.AdminConfig(), ns, "pg", "postgres", "sh", "-c",
		"id -u; psql -h /var/run/postgresql -U postgres -Atc 'select current_setting($$data_directory$$)'; touch /usr/x 2>&1 || true")
	require.NoError(t, err)
	require.Equal(t, "999\n/data/pgdata\ntouch: cannot touch '/usr/x': Read-only file system\n", string(out))

	logs, err := env.kube.CoreV1().Pods(ns).GetLogs("pg", &corev1.PodLogOptions{Container: "postgres"}).DoRaw(ctx)
	require.NoError(t, err)
	require.Contains(t, string(logs), "started")

	// From the host through the ClusterIP (kube-proxy), once the endpoints are in.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(svc.Spec.ClusterIP, "5432"), time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	}))

	// From a pod on the other node.
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			NodeSelector:    map[string]string{corev1.LabelHostname: env.nodes.Nodes[1].Name},
			SecurityContext: kubenode.PostgresUser(),
			RestartPolicy:   corev1.RestartPolicyNever,
			Containers: []corev1.Container{kubenode.Restricted(corev1.Container{
				Name: "psql", Image: kubenode.PostgresImage,
				Command: []string{"psql", "-h", svc.Spec.ClusterIP, "-U", "postgres", "-Atc", "select 42"},
			})},
		},
	}
	_, err = env.kube.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{})
	require.NoError(t, err)
	waitPod(t, ns, "client", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	logs, err = env.kube.CoreV1().Pods(ns).GetLogs("client", &corev1.PodLogOptions{}).DoRaw(ctx)
	require.NoError(t, err)
	require.Equal(t, "42\n", string(logs))

	// A kubelet's container garbage collection (every minute) deletes the log directories of
	// the pods it does not run: the server's log is still there once both have run since.
	time.Sleep(kubeletGCPeriod + 10*time.Second)
	logs, err = env.kube.CoreV1().Pods(ns).GetLogs("pg", &corev1.PodLogOptions{Container: "postgres"}).DoRaw(ctx)
	require.NoError(t, err)
	require.Contains(t, string(logs), "started")
}

// kubeletGCPeriod is how often a kubelet collects dead containers and pod log directories
// (its ContainerGCPeriod), not configurable.
const kubeletGCPeriod = time.Minute

// podNamespace is a new namespace in which pods can be created directly (its default
// ServiceAccount exists).
func podNamespace(t *testing.T, ctx context.Context) string {
	ns := newNamespace(t, ctx)
	require.NoError(t, env.cluster.WaitForServiceAccount(ctx, ns, "default"))
	return ns
}

// waitPod waits up to 3 minutes for pod ns/name to be ok.
func waitPod(t *testing.T, ns, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	pod, err := kubenode.WaitPod(context.Background(), env.kube, ns, name, 3*time.Minute, ok)
	require.NoError(t, err)
	return pod
}
