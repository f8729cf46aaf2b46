package kubenode_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/podstatus"
	"github.com/pgops/pgops/test/kubenode"
	"github.com/pgops/pgops/test/localcluster"
)

// The faults the tests inject, as the kubelet and the control plane see them, on two
// nodes of this package's own WithoutServices, so that they run beside the e2e's (a machine
// has one kube-proxy). What needs Services (a pod reached through its ClusterIP, exec,
// logs) is tested on the e2e's nodes: test/e2e/nodes_test.go.

var env struct {
	cluster *localcluster.Cluster
	nodes   *kubenode.Nodes
	kube    kubernetes.Interface
}

// nodeForPods runs the pods of the stopped-pod tests, nodeToLose those of the lost-node
// test: a lost node stops every pod on it.
var nodeForPods, nodeToLose string

// pgBin holds the PostgreSQL image's server binaries.
const pgBin = "/usr/lib/postgresql/15/bin"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() || os.Geteuid() != 0 {
		if os.Getenv("PGOPS_REQUIRE_LOCALCLUSTER") != "" && !testing.Short() {
			fmt.Fprintln(os.Stderr, "kubenode tests need root")
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping kubenode tests: -short or not root")
		return 0
	}
	dir, err := os.MkdirTemp("", "pgops-kubenode-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keep := os.Getenv("PGOPS_KEEP_E2E") != ""
	if !keep {
		defer os.RemoveAll(dir)
	}
	var progress io.Writer
	if testing.Verbose() {
		progress = os.Stderr
	}
	nodes, err := kubenode.Reserve(kubenode.Options{Count: 2, RootDir: filepath.Join(dir, "nodes"), Progress: progress, WithoutServices: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster, err := localcluster.Start(ctx, nodes.ClusterOptions(localcluster.Options{WorkDir: filepath.Join(dir, "cluster"), KeepWorkDir: keep, Progress: progress}))
	if err != nil {
		nodes.Stop()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cluster.Stop()
	defer nodes.Stop() // before the control plane
	if err := nodes.Start(ctx, cluster); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.cluster, env.nodes, env.kube = cluster, nodes, cluster.Client()
	nodeForPods, nodeToLose = nodes.Nodes[0].Name, nodes.Nodes[1].Name
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "logs in %s (PGOPS_KEEP_E2E=1 keeps them)\n", dir)
	}
	return code
}

// namespace is a new namespace enforcing Pod Security "restricted", deleted when the test
// ends (pods left running would load the nodes for the tests after it).
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kubenode-", Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	ns, err := env.kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = env.kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	require.NoError(t, env.cluster.WaitForServiceAccount(context.Background(), ns.Name, "default"))
	return ns.Name
}

// A lost node (its kubelet, containerd and pods stopped together, as when a machine hangs)
// turns NotReady after the node monitor's grace period and its pods NotReady with it; its
// pods' processes are stopped, not gone. Restored, the node and the pod are Ready again.
func TestLostNodeTurnsNotReadyAndBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := namespace(t)
	_, err := env.kube.CoreV1().Pods(ns).Create(ctx, stoppablePod("on-lost-node", nodeToLose, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	running := waitPod(t, ns, "on-lost-node", podstatus.Ready)
	pid, err := env.nodes.ContainerPID(running, "postgres")
	require.NoError(t, err)

	require.NoError(t, env.nodes.LoseNode(nodeToLose))
	restored := false
	t.Cleanup(func() {
		if !restored {
			_ = env.nodes.RestoreNode(nodeToLose)
		}
	})
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return kubenode.ProcessState(pid) == "T", nil
	}), "the lost node's pod is stopped: state %q", kubenode.ProcessState(pid))
	waitNode(t, nodeToLose, func(c corev1.ConditionStatus) bool { return c != corev1.ConditionTrue })
	waitPod(t, ns, "on-lost-node", func(p *corev1.Pod) bool { return !podstatus.Ready(p) })

	require.NoError(t, env.nodes.RestoreNode(nodeToLose))
	restored = true
	waitNode(t, nodeToLose, func(c corev1.ConditionStatus) bool { return c == corev1.ConditionTrue })
	again := waitPod(t, ns, "on-lost-node", podstatus.Ready)
	require.Zero(t, again.Status.ContainerStatuses[0].RestartCount)
	require.Equal(t, running.UID, again.UID)
}

// waitNode waits for node name's Ready condition to be ok.
func waitNode(t *testing.T, name string, ok func(corev1.ConditionStatus) bool) {
	t.Helper()
	var node *corev1.Node
	// The node monitor's grace period (50 s) and a margin for a busy machine.
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := env.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		node = n
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return ok(c.Status), nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "node %s: %+v", name, node)
}

// A pod whose processes are all stopped (a hung process) is seen by the kubelet: its
// readiness probe fails and it turns NotReady, and Ready again once they continue, the same
// processes (the pod has no liveness probe, so nothing else could have made it Ready).
func TestStoppedPodIsSeenByTheKubelet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := namespace(t)
	_, err := env.kube.CoreV1().Pods(ns).Create(ctx, stoppablePod("hung", nodeForPods, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	running := waitPod(t, ns, "hung", podstatus.Ready)
	pid, err := env.nodes.ContainerPID(running, "postgres")
	require.NoError(t, err)

	require.NoError(t, env.nodes.StopPod(running))
	waitPod(t, ns, "hung", func(p *corev1.Pod) bool { return !podstatus.Ready(p) })
	require.NoError(t, env.nodes.ContinuePod(running))
	again := waitPod(t, ns, "hung", podstatus.Ready)
	require.Zero(t, again.Status.ContainerStatuses[0].RestartCount)
	continued, err := env.nodes.ContainerPID(again, "postgres")
	require.NoError(t, err)
	require.Equal(t, pid, continued, "the stopped server continued, not a new one")
}

// Past its liveness budget, a stopped pod's container is restarted by the kubelet: the
// SIGTERM waits with the stopped server, the SIGKILL after the grace period does not.
func TestStoppedPodIsRestartedByItsLivenessProbe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := namespace(t)
	_, err := env.kube.CoreV1().Pods(ns).Create(ctx, stoppablePod("hung", nodeForPods, probeServer(3)), metav1.CreateOptions{})
	require.NoError(t, err)
	running := waitPod(t, ns, "hung", podstatus.Ready)

	require.NoError(t, env.nodes.StopPod(running))
	restarted := waitPod(t, ns, "hung", func(p *corev1.Pod) bool {
		return podstatus.Ready(p) && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	require.Equal(t, running.UID, restarted.UID, "the same pod, its container restarted")
}

// probeServer asks the server a question, not a TCP connect: the kernel completes a stopped
// server's handshakes into its listen backlog, so a tcpSocket probe passes while nothing
// answers.
func probeServer(failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
			// The server's own, not Debian's wrapper on PATH (a Perl script: 3 times the
			// CPU, once a second).
			Command: []string{pgBin + "/pg_isready", "-q", "-h", "/tmp", "-t", "1"},
		}},
		PeriodSeconds: 1, TimeoutSeconds: 2, FailureThreshold: failures,
	}
}

// stoppablePod is a PostgreSQL server whose readiness asks it a question, with liveness if
// given; a restarted container finds the data its predecessor made.
func stoppablePod(name, node string, liveness *corev1.Probe) *corev1.Pod {
	var startup *corev1.Probe
	if liveness != nil {
		startup = probeServer(120)
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:    map[string]string{corev1.LabelHostname: node},
			SecurityContext: kubenode.PostgresUser(),
			// A stopped process acts on SIGTERM only once continued: the kubelet's restart
			// waits out the grace period, then SIGKILLs it.
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{kubenode.Restricted(corev1.Container{
				Name: "postgres", Image: kubenode.PostgresImage,
				Command: []string{"bash", "-c", "{ [ -f /tmp/pgdata/PG_VERSION ] || initdb -D /tmp/pgdata -U postgres >/dev/null; } && " +
					"exec postgres -D /tmp/pgdata -k /tmp -c listen_addresses='*'"},
				// Liveness starts once the server has answered: a server still starting on a
				// busy machine is not hung.
				StartupProbe:   startup,
				ReadinessProbe: probeServer(1),
				LivenessProbe:  liveness,
				VolumeMounts:   []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
			})},
			Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// waitPod waits up to 3 minutes for pod ns/name to be ok.
func waitPod(t *testing.T, ns, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	pod, err := kubenode.WaitPod(context.Background(), env.kube, ns, name, 3*time.Minute, ok)
	require.NoError(t, err)
	return pod
}

// TestVersionsMatchHack keeps ContainerdVersion in step with hack/versions.sh, which names
// the directory hack/install-node.sh builds containerd into.
func TestVersionsMatchHack(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "hack", "versions.sh"))
	require.NoError(t, err)
	m := regexp.MustCompile(`CONTAINERD_VERSION="\$\{CONTAINERD_VERSION:-([^}]+)\}"`).FindSubmatch(b)
	require.NotNil(t, m, "CONTAINERD_VERSION not found in hack/versions.sh")
	require.Equal(t, kubenode.ContainerdVersion, string(m[1]))
}
