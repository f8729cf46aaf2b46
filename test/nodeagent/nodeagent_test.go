package nodeagent

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/pgtest"
	"github.com/pgops/pgops/test/localcluster"
)

// One cluster without kwok's fake node and one agent for the package.
var (
	cluster *localcluster.Cluster
	agent   *Agent
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		// Never skip: missing binaries fail with the way to get them.
		if err := localcluster.CheckBinaries(localcluster.DefaultBinDir()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := pgtest.BinDir(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "test/nodeagent must run as root (mount namespaces; PostgreSQL as the postgres user)")
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		network, err := ReserveNetwork()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer network.Release()
		opts := localcluster.Options{
			SkipFakeNode: true,
			ServiceCIDR:  network.ServiceCIDR.String(),
		}
		if testing.Verbose() {
			opts.Progress = os.Stderr
		}
		began := time.Now()
		c, err := localcluster.Start(ctx, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Stop()
		var log *os.File
		if testing.Verbose() {
			log = os.Stderr
		}
		aopts := Options{Client: c.Client(), Network: network}
		if log != nil {
			aopts.Log = log
		}
		a, err := Start(ctx, aopts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer a.Stop()
		fmt.Fprintf(os.Stderr, "cluster and node agent ready in %s (pods %s, services %s)\n",
			time.Since(began).Round(time.Millisecond), a.PodCIDR, opts.ServiceCIDR)
		cluster, agent = c, a
		return m.Run()
	}()
	os.Exit(code)
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var nsSeq atomic.Int32

// namespace creates a fresh namespace; on failure the logs of its containers are
// printed.
func namespace(ctx context.Context, t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 60 {
		name = name[:60]
	}
	name = strings.TrimRight(name, "-")
	_, err := cluster.CreateNamespace(ctx, name)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, name)
		}
	})
	return name
}

func dumpLogs(t *testing.T, ns string) {
	if out, err := cluster.Kubectl(context.Background(), "-n", ns, "get", "pods,svc,endpointslices,pvc", "-o", "wide"); err == nil {
		t.Logf("--- objects:\n%s", out)
	}
	entries, _ := os.ReadDir(agent.RootDir + "/logs")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ns+"_") {
			b, _ := os.ReadFile(agent.RootDir + "/logs/" + e.Name())
			t.Logf("--- %s:\n%s", e.Name(), tailLines(string(b), 40))
		}
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func client() kubernetes.Interface { return cluster.Client() }

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPod polls pod ns/name until cond holds and returns it.
func waitPod(ctx context.Context, t *testing.T, ns, name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		if last != nil {
			t.Logf("last status of %s/%s: phase %s, conditions %+v, containers %+v", ns, name, last.Status.Phase, last.Status.Conditions, last.Status.ContainerStatuses)
		}
		t.Fatalf("waiting for pod %s/%s to be %s: %v", ns, name, what, err)
	}
	return last
}

func waitPodGone(ctx context.Context, t *testing.T, ns, name string, uid types.UID) {
	t.Helper()
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && p.UID != uid, err
	})
	require.NoError(t, err, "pod %s/%s (uid %s) not removed", ns, name, uid)
}

func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is dead for our purpose.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		var pg int
		if len(f) > 2 && f[0] != "Z" {
			fmt.Sscan(f[2], &pg)
			if pg == pgid {
				out = append(out, pid)
			}
		}
	}
	return out
}

// nsMembers lists the processes sharing pid's mount namespace: a container's
// processes, also those that left its process group.
func nsMembers(t *testing.T, pid int) []int {
	id, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	require.NoError(t, err)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	require.NotEqual(t, self, id, "pid %d is in the agent's mount namespace", pid)
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && ns == id && processAlive(p) {
			out = append(out, p)
		}
	}
	return out
}

func readLog(ns, pod, container string) string {
	b, _ := os.ReadFile(agent.LogPath(ns, pod, container))
	return string(b)
}

func waitLog(ctx context.Context, t *testing.T, ns, pod, container, substr string) string {
	t.Helper()
	var got string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		got = readLog(ns, pod, container)
		return strings.Contains(got, substr), nil
	})
	require.NoError(t, err, "log of %s/%s/%s never contained %q; it has:\n%s", ns, pod, container, substr, got)
	return got
}

func TestPlainPod(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ns := namespace(ctx, t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "debian:12",
				Command: []string{"bash", "-c", `echo "hi from $(hostname) as $(id -un) in $PWD"; exec sleep infinity`},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					Exec: &corev1.ExecAction{Command: []string{"true"}},
				}},
			}},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
		},
	}
	began := time.Now()
	created, err := client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	got := waitPod(ctx, t, ns, "plain", "Ready", isReady)
	t.Logf("Ready in %s", time.Since(began).Round(time.Millisecond))

	assert.Equal(t, agent.NodeName, got.Spec.NodeName, "scheduled onto the agent's node")
	assert.Equal(t, corev1.PodRunning, got.Status.Phase)
	ip, err := netip.ParseAddr(got.Status.PodIP)
	require.NoError(t, err)
	assert.True(t, agent.PodCIDR.Contains(ip), "pod IP %s outside %s", ip, agent.PodCIDR)
	assert.Equal(t, []corev1.PodIP{{IP: got.Status.PodIP}}, got.Status.PodIPs)
	assert.Equal(t, agent.Network.Gateway.String(), got.Status.HostIP, "the host's address on the pod network")
	require.NotNil(t, got.Status.StartTime)
	require.Len(t, got.Status.ContainerStatuses, 1)
	cs := got.Status.ContainerStatuses[0]
	assert.True(t, cs.Ready)
	assert.Equal(t, ptr.To(true), cs.Started)
	assert.NotNil(t, cs.State.Running)
	assert.Zero(t, cs.RestartCount)
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		found := false
		for _, c := range got.Status.Conditions {
			if c.Type == ct {
				found = true
				assert.Equal(t, corev1.ConditionTrue, c.Status, "condition %s", ct)
			}
		}
		assert.True(t, found, "condition %s missing", ct)
	}
	waitLog(ctx, t, ns, "plain", "main", "hi from plain as postgres in /")

	pid := agent.ContainerPID(ns, "plain", "")
	require.NotZero(t, pid)
	require.True(t, processAlive(pid))

	began = time.Now()
	require.NoError(t, client().CoreV1().Pods(ns).Delete(ctx, "plain", metav1.DeleteOptions{}))
	waitPodGone(ctx, t, ns, "plain", created.UID)
	t.Logf("deleted in %s", time.Since(began).Round(time.Millisecond))
	assert.False(t, processAlive(pid), "process %d survived its pod", pid)
	assert.Empty(t, groupMembers(pid))
	_, err = os.Stat(agent.podDir(string(created.UID)))
	assert.True(t, os.IsNotExist(err), "pod dir left behind")
}

// TestEnvAndVolumes checks the kubelet's environment rules and the file volumes: a
// Service created before the pod shows as <SVC>_SERVICE_HOST, $(VAR) expands,
// fieldRef/configMapKeyRef resolve, a ConfigMap volume has its files with their
// modes, and an emptyDir is writable.
func TestEnvAndVolumes(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ns := namespace(ctx, t)
	svc, err := client().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "my-db"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "none"},
			Ports:    []corev1.ServicePort{{Name: "pg-port", Port: 5432}, {Name: "metrics", Port: 9187}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client().CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
		Data:       map[string]string{"greeting": "hello", "script.sh": "echo from-script"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	script := `set -e
echo "host=$MY_DB_SERVICE_HOST port=$MY_DB_SERVICE_PORT named=$MY_DB_SERVICE_PORT_METRICS"
echo "primary=$PRIMARY_HOST literal=$LITERAL missing=$MISSING"
echo "pod=$POD_NAME ns=$POD_NAMESPACE ip=$POD_IP node=$NODE greeting=$GREETING label=$APP"
echo "k8s=${KUBERNETES_SERVICE_HOST:+set}"
echo "mode=$(stat -c %a /etc/cfg/script.sh) $(bash /etc/cfg/script.sh)"
echo data >/scratch/f && echo "scratch=$(cat /scratch/f)"
echo "token=$(test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes)"
echo "argv=$1"
exec sleep infinity`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "env", Labels: map[string]string{"app": "env-test"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   "busybox",
				Command: []string{"bash", "-c", script, "bash"},
				Args:    []string{"$(GREETING)-arg"},
				Env: []corev1.EnvVar{
					{Name: "PRIMARY_HOST", Value: "$(MY_DB_SERVICE_HOST)"},
					{Name: "LITERAL", Value: "$$(MY_DB_SERVICE_HOST)"},
					{Name: "MISSING", Value: "$(NOT_DEFINED)"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
					{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
					{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
					{Name: "OPTIONAL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "x", Optional: ptr.To(true)}}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "cfg", MountPath: "/etc/cfg"},
					{Name: "scratch", MountPath: "/scratch"},
				},
				// Run at once and fatal at the first failure: an exec probe sees the
				// container's mounts from its first run, never the node's directories. A
				// generous timeout: on a busy machine the exec itself may take over the
				// default second, and that failure would restart the container too.
				StartupProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-s", "/etc/cfg/greeting"}}},
					PeriodSeconds:    1,
					TimeoutSeconds:   10,
					FailureThreshold: 1,
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptr.To[int32](0o555)}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
			TerminationGracePeriodSeconds: ptr.To[int64](1),
		},
	}
	_, err = client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	got := waitPod(ctx, t, ns, "env", "Ready", isReady)
	require.Len(t, got.Status.ContainerStatuses, 1)
	assert.Zero(t, got.Status.ContainerStatuses[0].RestartCount, "the startup probe passed at its first run")
	log := waitLog(ctx, t, ns, "env", "main", "argv=")
	ip := svc.Spec.ClusterIP
	for _, want := range []string{
		fmt.Sprintf("host=%s port=5432 named=9187", ip),
		fmt.Sprintf("primary=%s literal=$(MY_DB_SERVICE_HOST) missing=$(NOT_DEFINED)", ip),
		fmt.Sprintf("pod=env ns=%s ip=%s node=%s greeting=hello label=env-test", ns, got.Status.PodIP, agent.NodeName),
		"k8s=set",
		"mode=555 from-script",
		"scratch=data",
		"token=yes",
		"argv=hello-arg",
	} {
		assert.Contains(t, log, want)
	}
}

// pgScript is a minimal database pod entrypoint: initdb on first start (password from
// the environment via a file), then postgres on POD_IP only, no Unix sockets.
const pgScript = `set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pw="$(mktemp)"
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
	initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C >/dev/null
	rm -f "$pw"
	echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" -c listen_addresses="$POD_IP" -c port=5432 -c unix_socket_directories= -c fsync=off
`

func TestPostgresStatefulSet(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	ns := namespace(ctx, t)
	cs := client()
	const password = "s3cret-'pass word"
	_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-auth"},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "postgres", "password": password},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"app": "pg"}
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-pods"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	// The primary Service: pod 0 only, by a named target port.
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"statefulset.kubernetes.io/pod-name": "pg-0"},
			Ports:    []corev1.ServicePort{{Name: "primary", Port: 5432, TargetPort: intstr.FromString("db")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	// All pods.
	all, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-all"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 15432, TargetPort: intstr.FromInt32(5432)}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "pg-auth"}, Key: key}}}
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](2),
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			ServiceName:         "pg-pods",
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name:    "postgres",
						Image:   "postgres:15",
						Command: []string{"bash", "-c", pgScript},
						Ports:   []corev1.ContainerPort{{Name: "db", ContainerPort: 5432}},
						Env: []corev1.EnvVar{
							secretEnv("POSTGRES_USER", "username"),
							secretEnv("POSTGRES_PASSWORD", "password"),
							{Name: "PGDATA", Value: "/var/pv/data"},
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
							{Name: "PRIMARY_HOST", Value: "$(PG_SERVICE_HOST)"},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/pv"}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
								Command: []string{"sh", "-c", `pg_isready -h "$POD_IP" -p 5432`},
							}},
							PeriodSeconds: 5, FailureThreshold: 3,
						},
					}},
					TerminationGracePeriodSeconds: ptr.To[int64](30),
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
	began := time.Now()
	_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	require.NoError(t, err)
	pod0 := waitPod(ctx, t, ns, "pg-0", "Ready", isReady)
	pod1 := waitPod(ctx, t, ns, "pg-1", "Ready", isReady)
	t.Logf("2 PostgreSQL pods Ready in %s", time.Since(began).Round(time.Millisecond))
	assert.NotEqual(t, pod0.Status.PodIP, pod1.Status.PodIP)

	open := func(host string, port int32) *sql.DB {
		dsn := fmt.Sprintf("host=%s port=%d user=postgres password='%s' dbname=postgres sslmode=disable connect_timeout=5",
			host, port, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password))
		db, err := sql.Open("postgres", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		db.SetMaxIdleConns(0)
		return db
	}
	// queryEventually retries while the Service's endpoints catch up.
	queryEventually := func(db *sql.DB, q string) string {
		t.Helper()
		var out string
		var lastErr error
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			lastErr = db.QueryRowContext(ctx, q).Scan(&out)
			return lastErr == nil, nil
		})
		require.NoError(t, err, "query %q: %v", q, lastErr)
		return out
	}

	// Through the primary Service's ClusterIP (the proxy), with the Secret's password.
	primary := open(svc.Spec.ClusterIP, 5432)
	assert.Equal(t, pod0.Status.PodIP, queryEventually(primary, "SELECT host(inet_server_addr())"))
	_, err = primary.ExecContext(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
	require.NoError(t, err)
	// The second Service reaches both pods (random endpoint per connection), once its
	// endpoints list pg-1, which turned Ready just now.
	seen := map[string]bool{}
	allDB := open(all.Spec.ClusterIP, 15432)
	var lastErr error
	_ = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var addr string
		if lastErr = allDB.QueryRowContext(ctx, "SELECT host(inet_server_addr())").Scan(&addr); lastErr == nil {
			seen[addr] = true
		}
		return len(seen) >= 2, nil
	})
	assert.Equal(t, map[string]bool{pod0.Status.PodIP: true, pod1.Status.PodIP: true}, seen, "last error: %v", lastErr)
	// The password is not in the log.
	assert.NotContains(t, readLog(ns, "pg-0", "postgres"), password)

	// Deleting pod 0: the StatefulSet recreates it (new UID), with the same data.
	began = time.Now()
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, "pg-0", metav1.DeleteOptions{}))
	waitPodGone(ctx, t, ns, "pg-0", pod0.UID)
	t.Logf("pg-0 terminated in %s", time.Since(began).Round(time.Millisecond))
	newPod0 := waitPod(ctx, t, ns, "pg-0", "recreated and Ready", func(p *corev1.Pod) bool {
		return p.UID != pod0.UID && isReady(p)
	})
	t.Logf("pg-0 back in %s", time.Since(began).Round(time.Millisecond))
	assert.NotEqual(t, pod0.UID, newPod0.UID)
	assert.Equal(t, "survives", queryEventually(primary, "SELECT v FROM kept"))

	// Killing pod 1's server: NotReady, then Ready again after one restart. The
	// postmaster's children (their own process groups: PostgreSQL calls setsid) go too.
	oldProcs := nsMembers(t, agent.ContainerPID(ns, "pg-1", "postgres"))
	assert.Greater(t, len(oldProcs), 3, "postmaster and its children")
	began = time.Now()
	require.NoError(t, agent.KillContainer(ns, "pg-1"))
	waitPod(ctx, t, ns, "pg-1", "NotReady", func(p *corev1.Pod) bool { return !isReady(p) })
	restarted := waitPod(ctx, t, ns, "pg-1", "Ready after a restart", func(p *corev1.Pod) bool {
		return isReady(p) && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount == 1
	})
	t.Logf("pg-1 killed and Ready again in %s", time.Since(began).Round(time.Millisecond))
	assert.Equal(t, pod1.UID, restarted.UID)
	last := restarted.Status.ContainerStatuses[0].LastTerminationState.Terminated
	require.NotNil(t, last)
	assert.Equal(t, int32(137), last.ExitCode)
	for _, pid := range oldProcs {
		assert.False(t, processAlive(pid), "process %d of the killed container survived", pid)
	}

	// The data lives as long as the claim: deleting the StatefulSet keeps it, deleting
	// the claim removes it.
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-pg-0", metav1.GetOptions{})
	require.NoError(t, err)
	dir := agent.ClaimDir(ns, pvc.Name, pvc.UID)
	_, err = os.Stat(dir + "/data/PG_VERSION")
	require.NoError(t, err, "claim data at %s", dir)
	require.NoError(t, cs.AppsV1().StatefulSets(ns).Delete(ctx, "pg", metav1.DeleteOptions{}))
	waitPodGone(ctx, t, ns, "pg-0", newPod0.UID)
	_, err = os.Stat(dir + "/data/PG_VERSION")
	require.NoError(t, err, "claim data gone with the pod")
	require.NoError(t, cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data-pg-0", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	}, 30*time.Second, 100*time.Millisecond, "data of the deleted claim not removed")
}

// TestStopLeavesNoProcess runs a second agent with pods bound to its node directly,
// including a process that forks children, and checks Stop takes everything down.
func TestStopLeavesNoProcess(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ns := namespace(ctx, t)
	// A node of its own per run: pods of an earlier run (-count=2) stay bound to theirs.
	node2 := "node-" + ns
	a2, err := Start(ctx, Options{Client: client(), NodeName: node2, DisableServiceProxy: true})
	require.NoError(t, err)
	t.Cleanup(func() {
		a2.Stop()
		_ = client().CoreV1().Nodes().Delete(context.Background(), node2, metav1.DeleteOptions{})
	})
	for _, name := range []string{"a", "b"} {
		_, err := client().CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				NodeName: node2,
				Containers: []corev1.Container{{
					Name: "main", Image: "x",
					// Ignores SIGTERM: Stop has to escalate to SIGKILL. One child leaves
					// the process group (as PostgreSQL's do).
					Command: []string{"bash", "-c", `trap '' TERM; sleep 1000 & setsid sleep 1001 & wait`},
				}},
				TerminationGracePeriodSeconds: ptr.To[int64](2),
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	for _, name := range []string{"a", "b"} {
		waitPod(ctx, t, ns, name, "Ready", isReady)
	}
	pids := a2.Pids()
	require.Len(t, pids, 2)
	var all []int
	for _, pid := range pids {
		// Until the second sleep has called setsid, it is in bash's group as well.
		require.Eventually(t, func() bool { return len(nsMembers(t, pid)) == 3 && len(groupMembers(pid)) == 2 }, time.Minute, 50*time.Millisecond,
			"bash and two sleeps in the container of %d, bash and one sleep in its group", pid)
		all = append(all, nsMembers(t, pid)...)
	}
	root := a2.RootDir

	began := time.Now()
	a2.Stop()
	t.Logf("Stop took %s", time.Since(began).Round(time.Millisecond))
	a2.Stop() // idempotent
	// Stop waits for each container's main process; the others die of a SIGKILL, which
	// takes effect asynchronously.
	for _, pid := range all {
		assert.Eventually(t, func() bool { return !processAlive(pid) }, time.Minute, 50*time.Millisecond, "process %d survived Stop", pid)
	}
	for _, pid := range pids {
		assert.Eventually(t, func() bool { return len(groupMembers(pid)) == 0 }, time.Minute, 50*time.Millisecond, "group %d survived Stop", pid)
	}
	_, err = os.Stat(root)
	assert.True(t, os.IsNotExist(err), "RootDir %s not removed", root)
	for _, name := range []string{"a", "b"} {
		p, err := client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.False(t, isReady(p), "pod %s still Ready after its agent stopped", name)
	}
	node, err := client().CoreV1().Nodes().Get(ctx, node2, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, node.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})
}

// TestProvisionerEntrypoint runs the provisioner's real entrypoint.sh in pods shaped as
// docs/architecture.md fixes them (ConfigMap at /scripts, PVC at /var/pv, credentials by
// secretKeyRef, PRIMARY_HOST from the primary Service's link variable): pod 0 becomes a
// primary, pod 1 clones it with pg_basebackup through the primary Service's ClusterIP
// (the agent's proxy) and streams from it.
func TestProvisionerEntrypoint(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	ns := namespace(ctx, t)
	cs := client()
	const password = "entry-point:pass\\word"
	_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db-auth"},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "postgres", "password": password},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "db-scripts"},
		Data:       map[string]string{"entrypoint.sh": provisioner.EntrypointScript},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	labels := map[string]string{"app": "db"}
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db-pods"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	primarySvc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"statefulset.kubernetes.io/pod-name": "db-0"},
			Ports:    []corev1.ServicePort{{Name: "primary", Port: 5432, TargetPort: intstr.FromString("db")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "db-auth"}, Key: key}}}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](2),
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			ServiceName:         "db-pods",
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name:    "postgres",
						Image:   "postgres:15.4",
						Command: []string{"bash", "/scripts/entrypoint.sh"},
						Ports:   []corev1.ContainerPort{{Name: "db", ContainerPort: 5432}},
						Env: []corev1.EnvVar{
							secretEnv("POSTGRES_USER", "username"),
							secretEnv("POSTGRES_PASSWORD", "password"),
							{Name: "PGDATA", Value: "/var/pv/data"},
							fieldEnv("POD_NAME", "metadata.name"),
							fieldEnv("POD_IP", "status.podIP"),
							{Name: "PRIMARY_HOST", Value: "$(DB_SERVICE_HOST)"},
							{Name: "STANDBY_MODE", Value: "Hot"},
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "data", MountPath: "/var/pv"},
							{Name: "scripts", MountPath: "/scripts", ReadOnly: true},
							{Name: "run", MountPath: "/var/run/postgresql"},
							{Name: "tmp", MountPath: "/tmp"},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
								Command: []string{"sh", "-c", `pg_isready -h "$POD_IP" -p 5432`},
							}},
							InitialDelaySeconds: 2, PeriodSeconds: 5, TimeoutSeconds: 5, FailureThreshold: 3,
						},
						SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true)},
					}},
					Volumes: []corev1.Volume{
						{Name: "scripts", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "db-scripts"}, DefaultMode: ptr.To[int32](0o555)}}},
						{Name: "run", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
					// The official image's uid 999, which the machine need not have: the
					// agent shows the container an /etc/passwd that names it, as the image
					// would.
					SecurityContext: &corev1.PodSecurityContext{
						RunAsUser: ptr.To[int64](999), RunAsGroup: ptr.To[int64](999), FSGroup: ptr.To[int64](999), RunAsNonRoot: ptr.To(true),
					},
					EnableServiceLinks:            ptr.To(true),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
	began := time.Now()
	_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	require.NoError(t, err)
	waitPod(ctx, t, ns, "db-0", "Ready", isReady)
	standby := waitPod(ctx, t, ns, "db-1", "Ready", isReady)
	t.Logf("primary and standby Ready in %s", time.Since(began).Round(time.Millisecond))

	dsn := func(host string) string {
		return fmt.Sprintf("host=%s port=5432 user=postgres password='%s' dbname=postgres sslmode=disable connect_timeout=5",
			host, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password))
	}
	primary, err := sql.Open("postgres", dsn(primarySvc.Spec.ClusterIP))
	require.NoError(t, err)
	defer primary.Close()
	replica, err := sql.Open("postgres", dsn(standby.Status.PodIP))
	require.NoError(t, err)
	defer replica.Close()

	var inRecovery bool
	require.NoError(t, replica.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
	assert.True(t, inRecovery, "pod 1 is a standby")
	_, err = primary.ExecContext(ctx, "CREATE TABLE replicated AS SELECT 42 AS answer")
	require.NoError(t, err)
	var answer int
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return replica.QueryRowContext(ctx, "SELECT answer FROM replicated").Scan(&answer) == nil, nil
	})
	require.NoError(t, err, "the standby never saw the primary's table")
	assert.Equal(t, 42, answer)
	// pg_stat_replication has the standby's row only while its connection is up (a
	// walreceiver may reconnect): ask until it has one.
	var sender string
	var senderErr error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		senderErr = primary.QueryRowContext(ctx, "SELECT application_name FROM pg_stat_replication").Scan(&sender)
		return senderErr == nil, nil
	})
	require.NoError(t, err, "no standby in pg_stat_replication: %v", senderErr)
	assert.Equal(t, "db-1", sender)
	for _, pod := range []string{"db-0", "db-1"} {
		assert.NotContains(t, readLog(ns, pod, "postgres"), password, "password in the log of %s", pod)
	}

	// The pod's securityContext decides who runs: uid 999, which the machine need not
	// have, and the image's account name for it, so peer authentication over the socket
	// works as `kubectl exec db-0 -- psql -U postgres` does in a cluster.
	// Each pod has a network namespace of its own: both servers listen on every address
	// at 5432, as in a cluster.
	primaryPID, standbyPID := agent.ContainerPID(ns, "db-0", "postgres"), agent.ContainerPID(ns, "db-1", "postgres")
	own, err := os.Readlink("/proc/self/ns/net")
	require.NoError(t, err)
	primaryNet, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", primaryPID))
	require.NoError(t, err)
	standbyNet, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", standbyPID))
	require.NoError(t, err)
	assert.NotEqual(t, own, primaryNet)
	assert.NotEqual(t, primaryNet, standbyNet)
	var listen string
	require.NoError(t, replica.QueryRowContext(ctx, "SHOW listen_addresses").Scan(&listen))
	assert.Equal(t, "*", listen)

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", primaryPID))
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Uid:\s+999\s+999\s+999\s+999$`, string(status))
	out, err := agent.Exec(ctx, ns, "db-0", "postgres", "psql", "-U", "postgres", "-d", "postgres", "-Atc", "SELECT current_user, inet_server_addr() IS NULL")
	require.NoError(t, err, "psql over the Unix socket: %s", out)
	assert.Equal(t, "postgres|t", strings.TrimSpace(string(out)), "connected over the socket (no server address) as postgres")
	out, err = agent.Exec(ctx, ns, "db-0", "postgres", "sh", "-c", "touch /root-is-writable")
	require.Error(t, err, "readOnlyRootFilesystem: %s", out)
	assert.Contains(t, string(out), "Read-only file system")
}

// TestInitContainerAndLiveness: an init container runs to completion before the main
// container (sharing an emptyDir with it), and a failing liveness probe restarts the
// main container.
func TestInitContainerAndLiveness(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	ns := namespace(ctx, t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "init"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{
				Name: "prepare", Image: "x",
				Command:      []string{"sh", "-c", "echo prepared >/shared/marker"},
				VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
			}},
			Containers: []corev1.Container{{
				Name: "main", Image: "x",
				// Healthy for the first run only: the marker goes after one start.
				Command:      []string{"sh", "-c", `if [ -e /shared/marker ]; then echo "first: $(cat /shared/marker)"; rm /shared/marker; touch /shared/healthy; else echo second; fi; exec sleep infinity`},
				VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
				LivenessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "rm /shared/healthy"}}},
					FailureThreshold: 2,
				},
			}},
			Volumes:                       []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			TerminationGracePeriodSeconds: ptr.To[int64](1),
		},
	}
	_, err := client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	got := waitPod(ctx, t, ns, "init", "restarted by its liveness probe", func(p *corev1.Pod) bool {
		return isReady(p) && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	require.Len(t, got.Status.InitContainerStatuses, 1)
	initStatus := got.Status.InitContainerStatuses[0]
	require.NotNil(t, initStatus.State.Terminated)
	assert.Equal(t, int32(0), initStatus.State.Terminated.ExitCode)
	assert.Equal(t, "Completed", initStatus.State.Terminated.Reason)
	log := waitLog(ctx, t, ns, "init", "main", "second")
	assert.Contains(t, log, "first: prepared")
}
