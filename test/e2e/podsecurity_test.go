package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
)

// TestDatabasePodsInARestrictedNamespace: every e2e namespace enforces Pod Security
// "restricted" (newNamespace), and this test shows the API server's admission is really
// enforcing there, that the database's pods were admitted, and that they are reachable as
// any database pod is: PostgreSQL on all the pod's addresses and on a Unix socket where psql
// looks, peer login for the image's postgres user from inside the pod, a read-only root.
func TestDatabasePodsInARestrictedNamespace(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)

	// Admission is live: a pod that runs as root is refused.
	_, err := env.kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "root"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "busybox", Command: []string{"true"},
			SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)},
		}}},
	}, metav1.CreateOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `violates PodSecurity "restricted:latest"`)

	createPostgres(t, ctx, ns, "locked", 2)
	waitPostgresPhase(t, ctx, ns, "locked", kubedbv1.DatabasePhaseReady)
	cred := checkPrimaryLogin(t, ctx, ns, "locked")

	events, err := env.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, e := range events.Items {
		assert.NotEqual(t, "FailedCreate", e.Reason, "%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
	}
	pdb, err := env.kube.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "locked", metav1.GetOptions{})
	require.NoError(t, err, "two replicas have a PodDisruptionBudget")
	assert.Equal(t, int32(1), pdb.Spec.MaxUnavailable.IntVal)

	for _, pod := range []string{"locked-0", "locked-1"} {
		p := getPod(t, ctx, ns, pod)
		db := openDB(t, p.Status.PodIP, cred.username, cred.password)
		var sockets, listen string
		require.NoError(t, db.QueryRowContext(ctx, "SHOW unix_socket_directories").Scan(&sockets))
		assert.Equal(t, "/var/run/postgresql", sockets, pod)
		require.NoError(t, db.QueryRowContext(ctx, "SHOW listen_addresses").Scan(&listen))
		assert.Equal(t, "*", listen, "%s listens on all its addresses, so port-forward works", pod)

		// As `kubectl exec <pod> -- psql -U postgres` does: in the pod's mount namespace,
		// as its user (999), over the socket, no password.
		out, err := podExec(ctx, ns, pod, "psql", "-U", "postgres", "-d", "postgres", "-Atc",
			"SELECT current_user, inet_server_addr() IS NULL, pg_is_in_recovery()")
		require.NoError(t, err, "psql in %s: %s", pod, out)
		assert.Equal(t, "postgres|t|"+map[string]string{"locked-0": "f", "locked-1": "t"}[pod], strings.TrimSpace(string(out)), pod)
		out, err = podExec(ctx, ns, pod, "id", "-u")
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "999", strings.TrimSpace(string(out)), "%s runs as the official image's postgres user", pod)
		out, err = podExec(ctx, ns, pod, "sh", "-c", "touch /usr/pgops-probe")
		assert.Error(t, err, "%s: the root file system is read-only: %s", pod, out)

		// The server is the image's: its postmaster, the agent's child, runs the image's
		// binary (not this machine's PostgreSQL), as uid 999.
		p = getPod(t, ctx, ns, pod)
		postmaster, err := env.nodes.ContainerChildPID(p, provisioner.ContainerName, "postgres")
		require.NoError(t, err)
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", postmaster))
		require.NoError(t, err)
		assert.Equal(t, "/usr/lib/postgresql/15/bin/postgres", exe, "%s runs the image's server", pod)
		inImage, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", postmaster, exe))
		require.NoError(t, err)
		if onHost, err := os.Stat(exe); err == nil {
			assert.False(t, os.SameFile(inImage, onHost), "%s runs the image's binary, not the machine's", pod)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", postmaster))
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^Uid:\s+999\s+999\s+999\s+999$`, string(status), "%s: the server runs as uid 999", pod)
	}
}
