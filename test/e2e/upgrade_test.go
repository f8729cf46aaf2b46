package e2e

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
)

// legacyEntrypoint is the shell entrypoint of v0.1.0 (before the agent), as its ConfigMap
// held it.
//
//go:embed testdata/entrypoint-v0.1.0.sh
var legacyEntrypoint string

// legacyPodSpec turns spec, the agent's pod template, into v0.1.0's: no init container, the
// entrypoint from the ConfigMap configMap, and its exec probes, word for word.
func legacyPodSpec(spec *corev1.PodSpec, configMap string) {
	spec.InitContainers = nil
	for i, v := range spec.Volumes {
		if v.Name == provisioner.AgentVolume {
			spec.Volumes[i] = corev1.Volume{Name: "scripts", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: configMap}, DefaultMode: ptr.To[int32](0o555)}}}
		}
	}
	c := &spec.Containers[0]
	c.Command = []string{"bash", "/scripts/entrypoint.sh"}
	c.Ports = slices.DeleteFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name != "db" })
	for i, m := range c.VolumeMounts {
		if m.Name == provisioner.AgentVolume {
			c.VolumeMounts[i] = corev1.VolumeMount{Name: "scripts", MountPath: "/scripts", ReadOnly: true}
		}
	}
	exec := func(period, threshold int32, command ...string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: command}},
			PeriodSeconds: period, TimeoutSeconds: 5, FailureThreshold: threshold, SuccessThreshold: 1}
	}
	c.StartupProbe = exec(1, 600, "sh", "-c", `n=0; until pg_isready -q -h /var/run/postgresql -p 5432 -t 1; rc=$?; [ "$rc" -eq 0 ]; do n=$((n+1)); if [ "$n" -ge 10 ]; then [ -e /var/run/postgresql/pgops-preparing ] || exit $((rc > 1)); exit 0; fi; sleep 0.1; done; exit 0`)
	c.LivenessProbe = exec(20, 3, "sh", "-c", `[ -e /var/run/postgresql/pgops-preparing ] || { pg_isready -q -h /var/run/postgresql -p 5432 -t 4; [ "$?" -le 1 ]; }`)
	c.ReadinessProbe = exec(10, 3, "pg_isready", "-q", "-h", "/var/run/postgresql", "-p", "5432")
}

// runsAgent tells whether pod runs the agent rather than the shell entrypoint.
func runsAgent(pod *corev1.Pod) bool {
	return len(pod.Spec.InitContainers) == 1 && pod.Spec.InitContainers[0].Name == provisioner.AgentInitContainer
}

// TestUpgradeFromTheShellEntrypoint: a database whose pods the shell entrypoint of v0.1.0
// made and runs moves to the agent pod by pod, at each pod's restart, with its data, its
// credential and its replication intact after each move, and with a primary and a standby
// on different templates in between. The entrypoint's ConfigMap goes once no pod mounts it.
// It stops the provisioner to set up the old pods, so it runs alone.
func TestUpgradeFromTheShellEntrypoint(t *testing.T) {
	ctx := testContext(t, 2*provisionTimeout)
	ns := newNamespace(t, ctx)
	const db = "upgrade"
	createPostgres(t, ctx, ns, db, 2)
	waitPostgresPhase(t, ctx, ns, db, kubedbv1.DatabasePhaseReady)
	cred := authCredential(t, ctx, ns, db)
	pg := getPostgres(t, ctx, ns, db)

	// v0.1.0's objects: the provisioner is stopped while the StatefulSet is replaced by one
	// of the old template, whose pods initialise and clone their data afresh.
	stopProvisioner(t)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			startProvisioner(t, context.Background())
		}
	})
	sts := getStatefulSet(t, ctx, ns, db)
	owner := metav1.OwnerReference{APIVersion: "kubedb.com/v1", Kind: "Postgres", Name: db, UID: pg.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	_, err := env.kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: db + "-scripts", Labels: sts.Labels, OwnerReferences: []metav1.OwnerReference{owner}},
		Data:       map[string]string{"entrypoint.sh": legacyEntrypoint},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, env.kube.AppsV1().StatefulSets(ns).Delete(ctx, db, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}))
	for i := range 2 {
		require.NoError(t, env.kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, fmt.Sprintf("data-%s-%d", db, i), metav1.DeleteOptions{}))
	}
	poll(t, ctx, "the agent's StatefulSet, pods and claims to be gone", func(ctx context.Context) (bool, error) {
		_, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, db, metav1.GetOptions{})
		pods, perr := env.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: kubedbv1.LabelInstance + "=" + db})
		claims, cerr := env.kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		return apierrors.IsNotFound(err) && perr == nil && cerr == nil && len(pods.Items) == 0 && len(claims.Items) == 0, nil
	}, func() string { return "still there" })
	legacy := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: db, Namespace: ns, Labels: sts.Labels, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec:       *sts.Spec.DeepCopy(),
	}
	legacyPodSpec(&legacy.Spec.Template.Spec, db+"-scripts")
	_, err = env.kube.AppsV1().StatefulSets(ns).Create(ctx, legacy, metav1.CreateOptions{})
	require.NoError(t, err)
	for i := range 2 {
		name := fmt.Sprintf("%s-%d", db, i)
		pod := waitPodReady(t, ctx, ns, name)
		require.False(t, runsAgent(pod), "%s runs v0.1.0's entrypoint", name)
	}
	primary := openDB(t, primaryTarget(t, ctx, ns, db).Host, cred.username, cred.password)
	_, err = primary.ExecContext(ctx, `CREATE TABLE upgrade (step text); INSERT INTO upgrade VALUES ('written by v0.1.0')`)
	require.NoError(t, err)

	// The new provisioner takes the database over: the StatefulSet gets the agent's
	// template, and the running pods keep the old one until they restart.
	startProvisioner(t, ctx)
	restarted = true
	poll(t, ctx, "the StatefulSet to get the agent's template", func(ctx context.Context) (bool, error) {
		s, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, db, metav1.GetOptions{})
		return err == nil && len(s.Spec.Template.Spec.InitContainers) == 1 && s.Status.ObservedGeneration >= s.Generation, nil
	}, func() string { return "the old template" })
	waitPostgresPhase(t, ctx, ns, db, kubedbv1.DatabasePhaseReady)

	// Each pod moves at its restart, the standby first; after each move the data, the
	// credential and the replication are checked.
	for step, name := range []string{db + "-1", db + "-0"} {
		old := getPod(t, ctx, ns, name)
		require.False(t, runsAgent(old))
		require.NoError(t, env.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}))
		var pod *corev1.Pod
		poll(t, ctx, name+" to come back on the agent and be Ready", func(ctx context.Context) (bool, error) {
			p, err := env.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.UID == old.UID {
				return false, nil
			}
			pod = p
			return runsAgent(p) && isReady(p), nil
		}, func() string { return fmt.Sprintf("%+v", pod) })
		waitPostgresPhase(t, ctx, ns, db, kubedbv1.DatabasePhaseReady)

		target := primaryTarget(t, ctx, ns, db)
		ok, err := credential.VerifyLogin(ctx, withCredential(target, cred), cred.username, cred.password)
		require.NoError(t, err)
		require.True(t, ok, "the credential logs in on the primary after %s moved", name)
		primary := openDB(t, target.Host, cred.username, cred.password)
		_, err = primary.ExecContext(ctx, `INSERT INTO upgrade VALUES ($1)`, fmt.Sprintf("after %s moved", name))
		require.NoError(t, err)
		standby := openDB(t, getPod(t, ctx, ns, db+"-1").Status.PodIP, cred.username, cred.password)
		want := step + 2
		rows := 0
		poll(t, ctx, "every row on the standby", func(ctx context.Context) (bool, error) {
			err := standby.QueryRowContext(ctx, `SELECT count(*) FROM upgrade`).Scan(&rows)
			return err == nil && rows == want, nil
		}, func() string { return fmt.Sprintf("%d of %d rows", rows, want) })
		streaming := 0
		poll(t, ctx, "the standby to stream", func(ctx context.Context) (bool, error) {
			n, err := credential.StreamingStandbys(ctx, withCredential(target, cred))
			streaming = n
			return err == nil && n == 1, nil
		}, func() string { return fmt.Sprintf("%d standbys stream", streaming) })

		_, err = env.kube.CoreV1().ConfigMaps(ns).Get(ctx, db+"-scripts", metav1.GetOptions{})
		if step == 0 {
			assert.NoError(t, err, "the primary still runs the entrypoint from the ConfigMap")
		}
	}
	poll(t, ctx, "the entrypoint's ConfigMap to go", func(ctx context.Context) (bool, error) {
		_, err := env.kube.CoreV1().ConfigMaps(ns).Get(ctx, db+"-scripts", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}, func() string { return "still there" })
}

func withCredential(t credential.Target, cred credentialPair) credential.Target {
	t.User, t.Password = cred.username, cred.password
	return t
}

func isReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPodReady waits for the pod ns/name to exist and be Ready.
func waitPodReady(t testing.TB, ctx context.Context, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(t, ctx, name+" to be Ready", func(ctx context.Context) (bool, error) {
		p, err := env.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return isReady(p), nil
	}, func() string { return fmt.Sprintf("%+v", pod) })
	return pod
}

// stopProvisioner stops the provisioner; startProvisioner starts one again.
func stopProvisioner(t testing.TB) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	require.NoError(t, env.provisioner.Stop(30*time.Second))
}

func startProvisioner(t testing.TB, ctx context.Context) { startOperatorNamed(t, ctx, "provisioner") }
