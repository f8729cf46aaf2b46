package localcluster

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// shared is one cluster for the tests that only need a cluster, started by TestMain;
// nil when the binaries are missing (those tests then skip).
var (
	shared     *Cluster
	skipReason string
)

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		crashHelper()
		return
	}
	code := func() int {
		if err := CheckBinaries(DefaultBinDir()); err != nil {
			// CI sets PGOPS_REQUIRE_LOCALCLUSTER=1 so a missing build fails rather
			// than silently skipping.
			if os.Getenv("PGOPS_REQUIRE_LOCALCLUSTER") != "" {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			skipReason = err.Error()
			return m.Run()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		began := time.Now()
		c, err := Start(ctx, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "shared cluster started in %s\n", time.Since(began).Round(time.Millisecond))
		shared = c
		defer c.Stop()
		return m.Run()
	}()
	os.Exit(code)
}

func needCluster(t *testing.T) *Cluster {
	t.Helper()
	if shared == nil {
		t.Skip("no local cluster: ", skipReason)
	}
	return shared
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var podCIDR = netip.MustParsePrefix(DefaultPodCIDR)

func TestPodRunsWithLoopbackIP(t *testing.T) {
	c := needCluster(t)
	ctx := testContext(t)
	ns := createNamespace(ctx, t, c)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "postgres:16"}}},
	}
	_, err := c.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)

	got := waitPodReady(ctx, t, c.Client(), ns, "plain")
	assert.Equal(t, c.NodeName, got.Spec.NodeName)
	assert.Equal(t, corev1.PodRunning, got.Status.Phase)
	assertPodIP(t, got)
}

func TestStatefulSetWithVolumes(t *testing.T) {
	c := needCluster(t)
	ctx := testContext(t)
	ns := createNamespace(ctx, t, c)
	cs := c.Client()

	labels := map[string]string{"app": "pg"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](2),
			ServiceName: "pg",
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "postgres", Image: "postgres:16",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}},
				}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: ptr.To(StorageClassName),
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
					},
				},
			}},
		},
	}
	_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	require.NoError(t, err)

	var first *corev1.Pod
	for i := range 2 {
		p := waitPodReady(ctx, t, cs, ns, fmt.Sprintf("pg-%d", i))
		assertPodIP(t, p)
		if i == 0 {
			first = p
		}
		// kwok binds the claim (spec.volumeName) before it writes the Bound phase, and the
		// scheduler places the pod on the binding alone.
		name := fmt.Sprintf("data-pg-%d", i)
		var pvc *corev1.PersistentVolumeClaim
		poll(ctx, t, "PVC "+name+" Bound", func(ctx context.Context) (bool, error) {
			var err error
			pvc, err = cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && pvc.Status.Phase == corev1.ClaimBound, nil
		})
		assert.NotEmpty(t, pvc.Spec.VolumeName)
	}

	// Deleting a StatefulSet pod gets it recreated (kcm) and running again (kwok).
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, "pg-0", metav1.DeleteOptions{}))
	var again *corev1.Pod
	poll(ctx, t, "pg-0 recreated and Ready", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "pg-0", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		again = p
		return p.UID != first.UID && isReady(p), nil
	})
	assertPodIP(t, again)
	assert.Equal(t, "data-pg-0", again.Spec.Volumes[0].PersistentVolumeClaim.ClaimName, "same claim as before")
}

func TestServiceAccountConfigFollowsRBAC(t *testing.T) {
	c := needCluster(t)
	ctx := testContext(t)
	ns := createNamespace(ctx, t, c)
	cs := c.Client()

	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "operator"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg, err := c.ServiceAccountConfig(ctx, ns, "operator")
	require.NoError(t, err)
	saClient, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	// The token really authenticates as the ServiceAccount...
	review, err := saClient.AuthenticationV1().SelfSubjectReviews().Create(ctx,
		&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, "system:serviceaccount:"+ns+":operator", review.Status.UserInfo.Username)
	// ...which may do nothing it was not granted.
	_, err = saClient.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err), "want 403, got %v", err)

	// Granting it makes the same call pass: the RBAC decides, not the setup.
	_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "read-secrets"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "operator-read-secrets"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "read-secrets"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "operator", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	poll(ctx, t, "secrets list allowed", func(ctx context.Context) (bool, error) {
		_, err := saClient.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
}

func TestKubectlAndServiceIP(t *testing.T) {
	c := needCluster(t)
	ctx := testContext(t)
	ns := createNamespace(ctx, t, c)

	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
	require.NoError(t, err)
	assert.Contains(t, string(out), "node/"+c.NodeName)

	out, err = c.Kubectl(ctx, "get", "storageclass", StorageClassName, "-o", "jsonpath={.metadata.annotations}")
	require.NoError(t, err)
	assert.Contains(t, string(out), `"storageclass.kubernetes.io/is-default-class":"true"`)

	_, err = c.Kubectl(ctx, "-n", ns, "create", "service", "clusterip", "db", "--tcp=5432:5432")
	require.NoError(t, err)
	svc, err := c.Client().CoreV1().Services(ns).Get(ctx, "db", metav1.GetOptions{})
	require.NoError(t, err)
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	require.NoError(t, err)
	assert.True(t, netip.MustParsePrefix(DefaultServiceCIDR).Contains(ip), "ClusterIP %s", ip)
}

// TestTwoClustersAndCleanStop starts two clusters at once (besides the shared one):
// they must not collide, and Stop must leave no process and no files behind.
func TestTwoClustersAndCleanStop(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var clusters [2]*Cluster
	var errs [2]error
	var wg sync.WaitGroup
	// The second has no fake Node and random loopback ranges, as a cluster whose nodes
	// someone else registers would.
	serviceCIDR := RandomLoopbackCIDR()
	opts := [2]Options{{}, {SkipFakeNode: true, ServiceCIDR: serviceCIDR, PodCIDR: RandomLoopbackCIDR()}}
	for i := range clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clusters[i], errs[i] = Start(ctx, opts[i])
		}()
	}
	wg.Wait()
	for i, c := range clusters {
		if c != nil {
			t.Cleanup(func() { c.Stop() })
		}
		require.NoError(t, errs[i], "cluster %d", i)
	}
	a, b := clusters[0], clusters[1]
	assert.NotEqual(t, a.Server, b.Server)
	assert.NotEqual(t, a.WorkDir, b.WorkDir)

	// Each is its own cluster: a namespace made in one is absent from the other.
	createNamespace(ctx, t, a)
	nsList, err := b.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, ns := range nsList.Items {
		assert.False(t, strings.HasPrefix(ns.Name, "test-"), "namespace %s leaked into the other cluster", ns.Name)
	}

	// SkipFakeNode: no Node at all, and Services get addresses from the random range.
	assert.Empty(t, b.NodeName)
	nodes, err := b.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, nodes.Items)
	// The API server creates the kubernetes Service after it is ready, on its own.
	var svc *corev1.Service
	poll(ctx, t, "the kubernetes Service", func(ctx context.Context) (bool, error) {
		svc, err = b.Client().CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		return err == nil, nil
	})
	assert.True(t, netip.MustParsePrefix(serviceCIDR).Contains(netip.MustParseAddr(svc.Spec.ClusterIP)),
		"ClusterIP %s outside %s", svc.Spec.ClusterIP, serviceCIDR)

	for _, c := range clusters {
		pids := c.Pids()
		require.Len(t, pids, 5)
		for name, pid := range pids {
			require.True(t, processAlive(pid), "%s (pid %d) not running", name, pid)
		}
		began := time.Now()
		require.NoError(t, c.Stop())
		t.Logf("stopped in %s", time.Since(began).Round(time.Millisecond))
		require.NoError(t, c.Stop(), "Stop is idempotent")
		for name, pid := range pids {
			assert.False(t, processAlive(pid), "%s (pid %d) survived Stop", name, pid)
			assert.Empty(t, processGroupMembers(pid), "processes left in %s's group", name)
		}
		_, err := os.Stat(c.WorkDir)
		assert.True(t, os.IsNotExist(err), "WorkDir %s not removed", c.WorkDir)
	}
}

// crashHelperEnv makes the test binary act as a process that starts a cluster, prints
// the component pids and waits to be killed (TestComponentsDieWithParent).
const crashHelperEnv = "LOCALCLUSTER_CRASH_HELPER"

func crashHelper() {
	c, err := Start(context.Background(), Options{WorkDir: os.Getenv(crashHelperEnv)})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	pids := c.Pids()
	for name, pid := range pids {
		fmt.Printf("%s %d\n", name, pid)
	}
	fmt.Println("ready")
	select {}
}

// TestComponentsDieWithParent kills a process running a cluster with SIGKILL, so no
// Stop runs: the kernel must take the components down with it (Pdeathsig).
func TestComponentsDieWithParent(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	workDir := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+workDir)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	pids := map[string]int{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		name, pid, ok := strings.Cut(sc.Text(), " ")
		require.True(t, ok, "helper said %q", sc.Text())
		n, err := strconv.Atoi(pid)
		require.NoError(t, err, "helper said %q", sc.Text())
		pids[name] = n
	}
	require.Len(t, pids, 5, "helper did not report its components")

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	poll(ctx, t, "components to die with their parent", func(context.Context) (bool, error) {
		for _, pid := range pids {
			if processAlive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
}

func TestStartWithoutBinaries(t *testing.T) {
	_, err := Start(context.Background(), Options{BinDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hack/install-k8s-bins.sh")
	assert.Contains(t, err.Error(), "kube-apiserver")
}

// TestVersionsMatchHack keeps DefaultBinDir in step with hack/versions.sh, which
// names the directory hack/install-k8s-bins.sh builds into.
func TestVersionsMatchHack(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "hack", "versions.sh"))
	require.NoError(t, err)
	for name, want := range map[string]string{"KUBE_VERSION": KubeVersion, "ETCD_VERSION": EtcdVersion, "KWOK_VERSION": KwokVersion} {
		m := regexp.MustCompile(name + `="\$\{` + name + `:-([^}]+)\}"`).FindSubmatch(b)
		require.NotNil(t, m, "%s not found in hack/versions.sh", name)
		assert.Equal(t, want, string(m[1]), name)
	}
}

func TestWorkDirKeptOnlyWithKeepWorkDir(t *testing.T) {
	// A caller-chosen WorkDir loses only what Start made in it.
	dir := t.TempDir()
	mine := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(mine, []byte("keep me"), 0o644))
	c := &Cluster{WorkDir: dir, opts: Options{LogDir: filepath.Join(dir, "logs")}}
	require.NoError(t, c.prepareWorkDir())
	require.NoError(t, os.WriteFile(c.Kubeconfig, []byte("x"), 0o600))
	require.NoError(t, c.removeWorkDir())
	_, err := os.Stat(mine)
	assert.NoError(t, err, "a file Start did not create was removed")
	_, err = os.Stat(c.Kubeconfig)
	assert.True(t, os.IsNotExist(err))
}

// --- helpers

var nsSeq struct {
	sync.Mutex
	n int
}

// createNamespace makes a fresh namespace "test-N" ready for pods.
func createNamespace(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	nsSeq.Lock()
	nsSeq.n++
	name := fmt.Sprintf("test-%d", nsSeq.n)
	nsSeq.Unlock()
	_, err := c.CreateNamespace(ctx, name)
	require.NoError(t, err)
	return name
}

func poll(ctx context.Context, t *testing.T, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, cond)
	require.NoError(t, err, "waiting for %s", what)
}

func waitPodReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(ctx, t, "pod "+ns+"/"+name+" Ready", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		pod = p
		return isReady(p), nil
	})
	return pod
}

func isReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func assertPodIP(t *testing.T, p *corev1.Pod) {
	t.Helper()
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if assert.NoError(t, err, "pod %s IP", p.Name) {
		assert.True(t, podCIDR.Contains(ip), "pod %s IP %s not in %s", p.Name, ip, podCIDR)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, state, _ := procStat(stat)
	return state != "Z" && state != "X"
}

// processGroupMembers lists live pids whose process group is pgid.
func processGroupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields, state, ok := procStat(stat)
		// Fields after the command: state ppid pgrp ...
		if ok && len(fields) > 2 && fields[2] == strconv.Itoa(pgid) && state != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat splits /proc/<pid>/stat after the parenthesised command name (which may
// contain spaces) and returns those fields and the state.
func procStat(stat []byte) (fields []string, state string, ok bool) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, "", false
	}
	fields = strings.Fields(s[i+1:])
	if len(fields) == 0 {
		return nil, "", false
	}
	return fields, fields[0], true
}

func TestRandomLoopbackCIDR(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		cidr := RandomLoopbackCIDR()
		p, err := netip.ParsePrefix(cidr)
		require.NoError(t, err)
		assert.Equal(t, 16, p.Bits())
		assert.True(t, netip.MustParsePrefix("127.0.0.0/8").Contains(p.Addr()), cidr)
		third := p.Addr().As4()[1]
		assert.True(t, third >= 10 && third <= 250, cidr)
		assert.False(t, seen[cidr], "handed out twice: %s", cidr)
		seen[cidr] = true
	}
}
