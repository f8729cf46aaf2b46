// Package e2e runs pgops end to end on a local control plane with real nodes
// (test/kubenode: kubelet, containerd, runc, kube-proxy) whose database pods run the
// PostgreSQL image: both operators run as local processes with only their
// ServiceAccounts' RBAC, manifests come from examples/ through kubectl, and the checks log
// in to PostgreSQL for real.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	"github.com/pgops/pgops/test/kubenode"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// env is the running system the tests share.
var env struct {
	cluster  *localcluster.Cluster
	nodes    *kubenode.Nodes
	kube     kubernetes.Interface
	pgops    pgopsclient.Interface
	workDir  string
	binaries map[string]string

	mu          sync.Mutex
	provisioner *testenv.Operator
	opsManager  *testenv.Operator
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "e2e setup:", err); return 1 }

	workDir, err := os.MkdirTemp("", "pgops-e2e-")
	if err != nil {
		return fail(err)
	}
	keep := os.Getenv("PGOPS_KEEP_E2E") != ""
	defer func() {
		if !keep {
			os.RemoveAll(workDir)
		}
	}()
	env.workDir = workDir

	var progress io.Writer
	if testing.Verbose() {
		progress = os.Stderr
	}
	// The operators, the agent and the operator image the nodes import, from the working
	// tree.
	if env.binaries, err = testenv.BuildOperators(filepath.Join(workDir, "bin")); err != nil {
		return fail(err)
	}
	operatorImage := filepath.Join(workDir, "pgops-image.tar")
	if err := testenv.BuildOperatorImage(filepath.Join(workDir, "bin"), operatorImage); err != nil {
		return fail(err)
	}
	// Two nodes: losing one is only testable with another left.
	nodes, err := kubenode.Reserve(kubenode.Options{Count: 2, RootDir: filepath.Join(workDir, "nodes"), Progress: progress,
		Images: append(kubenode.DefaultImages(), operatorImage)})
	if err != nil {
		return fail(err)
	}
	// Reserve may wait for another package's nodes (test/kubenode) to stop: the set-up
	// deadline counts from when it returns.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster, err := localcluster.Start(ctx, nodes.ClusterOptions(localcluster.Options{
		WorkDir:     filepath.Join(workDir, "cluster"),
		KeepWorkDir: keep,
		Progress:    progress,
	}))
	if err != nil {
		nodes.Stop()
		return fail(err)
	}
	defer cluster.Stop()
	defer nodes.Stop() // before the control plane
	if err := nodes.Start(ctx, cluster); err != nil {
		return fail(err)
	}
	env.cluster = cluster
	env.nodes = nodes
	env.kube = cluster.Client()
	if env.pgops, err = pgopsclient.NewForConfig(cluster.AdminConfig()); err != nil {
		return fail(err)
	}

	if err := testenv.InstallCRDsAndRBAC(ctx, cluster); err != nil {
		return fail(err)
	}
	if env.provisioner, err = startOperator(ctx, "provisioner"); err != nil {
		return fail(err)
	}
	defer func() { env.provisioner.Stop(30 * time.Second) }()
	if env.opsManager, err = startOperator(ctx, "ops-manager"); err != nil {
		return fail(err)
	}
	defer func() {
		env.mu.Lock()
		defer env.mu.Unlock()
		env.opsManager.Stop(30 * time.Second)
	}()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e logs: %s (set PGOPS_KEEP_E2E=1 to keep them)\n", workDir)
	}
	return code
}

// quickTakeover are lease settings for a quick takeover after a SIGKILL: the crash tests
// restart the ops-manager.
var quickTakeover = []string{"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=1s"}

// startOperator runs one operator with a token of its own ServiceAccount, so it has only
// the RBAC that manifests/ gives it, with quickTakeover and otherwise its default settings.
// Its log is appended to workDir/<name>.log.
func startOperator(ctx context.Context, name string) (*testenv.Operator, error) {
	return startOperatorWith(ctx, name, quickTakeover...)
}

// startOperatorWith is startOperator with args instead of quickTakeover.
func startOperatorWith(ctx context.Context, name string, args ...string) (*testenv.Operator, error) {
	cfg, err := env.cluster.ServiceAccountConfig(ctx, "pgops-system", "pgops-"+name)
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(operatorLog(name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	if name == "provisioner" {
		args = append(testenv.NodeImageFlags(), args...)
	}
	op, err := testenv.StartOperator(name, env.binaries[name], cfg, env.workDir, logFile, args...)
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := op.WaitReady(ctx); err != nil {
		op.Kill()
		return nil, err
	}
	return op, nil
}

// restartOperatorsWithDefaults restarts both operators at their default settings: the
// crash tests' short leases (quickTakeover) are lost on a machine as loaded as the
// parallel tests and the benchmarks make it, and an operator that loses its lease exits,
// as it should.
func restartOperatorsWithDefaults(t testing.TB, ctx context.Context) {
	t.Helper()
	if err := restartWithDefaults(ctx); err != nil {
		t.Fatal(err)
	}
}

func restartWithDefaults(ctx context.Context) error {
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, name := range []string{"provisioner", "ops-manager"} {
		op := &env.provisioner
		if name == "ops-manager" {
			op = &env.opsManager
		}
		if err := (*op).Stop(30 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the %s: %v\n", name, err)
		}
		restarted, err := startOperatorWith(ctx, name)
		if err != nil {
			return fmt.Errorf("starting the %s: %w", name, err)
		}
		*op = restarted
	}
	return nil
}

var (
	parallelOperators sync.Once
	parallelStartErr  error
)

// parallel runs an e2e test alongside the other parallel ones, once the sequential tests are
// done: those that kill the operators or change their RBAC. The first to run restarts both
// operators at their default settings, and the others wait for it. A parallel test must
// leave the operators and everything cluster-wide alone.
func parallel(t *testing.T) {
	t.Parallel()
	parallelOperators.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		parallelStartErr = restartWithDefaults(ctx)
	})
	if parallelStartErr != nil {
		t.Fatalf("restarting the operators for the parallel tests: %v", parallelStartErr)
	}
}

func operatorLog(name string) string { return filepath.Join(env.workDir, name+".log") }

// killOpsManager SIGKILLs the ops-manager and, once it is gone, deletes its Lease: the next
// one starts from the same state as after the Lease expired, without waiting it out
// (TestLeaderFailover waits it out).
func killOpsManager(t testing.TB) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	env.opsManager.Kill()
	err := env.kube.CoordinationV1().Leases("pgops-system").Delete(context.Background(), "pgops-ops-manager", metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting the killed ops-manager's Lease: %v", err)
	}
}

func startOpsManager(t testing.TB, ctx context.Context) { startOperatorNamed(t, ctx, "ops-manager") }

// startOperatorNamed starts the operator name ("provisioner" or "ops-manager") again, after
// a test stopped or killed it.
func startOperatorNamed(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	op, err := startOperator(ctx, name)
	require.NoError(t, err)
	if name == "provisioner" {
		env.provisioner = op
	} else {
		env.opsManager = op
	}
}

// killAndRestartOpsManager SIGKILLs the ops-manager, as a node failure would, and starts a
// new one, which must take over from the request's status alone.
func killAndRestartOpsManager(t testing.TB, ctx context.Context) {
	killOpsManager(t)
	startOpsManager(t, ctx)
}

// startStandbyOpsManager starts a second ops-manager replica. It does not become ready
// (its caches wait behind the Lease) until the current leader is gone.
func startStandbyOpsManager(ctx context.Context) (*testenv.Operator, error) {
	cfg, err := env.cluster.ServiceAccountConfig(ctx, "pgops-system", "pgops-ops-manager")
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(operatorLog("ops-manager"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return testenv.StartOperator("ops-manager-standby", env.binaries["ops-manager"], cfg, env.workDir, logFile,
		"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=1s")
}

// promote SIGKILLs the leading ops-manager and makes standby the one later tests use.
func promote(t testing.TB, standby *testenv.Operator) {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	env.opsManager.Kill()
	env.opsManager = standby
}

func testContext(t testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

var namespaceSeq struct {
	sync.Mutex
	n int
}

// restrictedNamespace is the Pod Security admission level every e2e namespace enforces:
// every database pod of every test must be admitted as a restricted cluster admits it.
var restrictedNamespace = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
}

func newNamespace(t testing.TB, ctx context.Context) string {
	t.Helper()
	return newNamespaceFor(t, ctx, t.Name())
}

// newNamespaceFor is newNamespace named after what instead of the test.
func newNamespaceFor(t testing.TB, ctx context.Context, what string) string {
	t.Helper()
	namespaceSeq.Lock()
	namespaceSeq.n++
	name := fmt.Sprintf("e2e-%d-%s", namespaceSeq.n, strings.ToLower(strings.NewReplacer("/", "-", "_", "-", "=", "-").Replace(what)))
	namespaceSeq.Unlock()
	if len(name) > 60 {
		name = strings.TrimRight(name[:60], "-")
	}
	_, err := env.cluster.CreateNamespaceWithLabels(ctx, name, restrictedNamespace)
	require.NoError(t, err)
	t.Cleanup(func() { deleteNamespace(name) })
	return name
}

// deleteNamespace deletes a test's namespace, so its databases' pods leave the nodes'
// capacity to the next tests. It waits for nothing: the operators and the garbage
// collector clear it.
func deleteNamespace(name string) {
	_ = env.kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
}

// applyExample applies examples/<file> with kubectl into namespace ns (the examples name
// namespace demo), after edit if not nil.
func applyExample(t testing.TB, ctx context.Context, ns, file string, edit func(string) string) {
	t.Helper()
	data, err := os.ReadFile(testenv.Path("examples", file))
	require.NoError(t, err)
	manifest := strings.ReplaceAll(string(data), "namespace: demo", "namespace: "+ns)
	if edit != nil {
		manifest = edit(manifest)
	}
	kubectlApply(t, ctx, manifest)
}

func kubectlApply(t testing.TB, ctx context.Context, manifest string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	require.NoError(t, os.WriteFile(file, []byte(manifest), 0o600))
	out, err := env.cluster.Kubectl(ctx, "apply", "-f", file)
	require.NoError(t, err, string(out))
}

func getPostgres(t testing.TB, ctx context.Context, ns, name string) *kubedbv1.Postgres {
	t.Helper()
	pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return pg
}

func getRequest(t testing.TB, ctx context.Context, ns, name string) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	req, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return req
}

func getSecret(t testing.TB, ctx context.Context, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := env.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return s
}

// poll waits for cond, failing the test with describe() when ctx runs out.
func poll(t testing.TB, ctx context.Context, what string, cond func(ctx context.Context) (bool, error), describe func() string) {
	t.Helper()
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v\n%s", what, err, describe())
	}
}

func waitPostgresPhase(t testing.TB, ctx context.Context, ns, name string, phase kubedbv1.DatabasePhase) {
	t.Helper()
	var last *kubedbv1.Postgres
	poll(t, ctx, fmt.Sprintf("Postgres %s/%s to be %s", ns, name, phase), func(ctx context.Context) (bool, error) {
		pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pg
		return pg.Status.Phase == phase, nil
	}, func() string { return describePostgres(last) })
}

func waitRequest(t testing.TB, ctx context.Context, ns, name string, cond func(*opsv1alpha1.PostgresOpsRequest) bool) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	var last *opsv1alpha1.PostgresOpsRequest
	poll(t, ctx, fmt.Sprintf("PostgresOpsRequest %s/%s", ns, name), func(ctx context.Context) (bool, error) {
		req, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = req
		return cond(req), nil
	}, func() string { return describeRequest(last) })
	return last
}

// waitRequestEnded waits until the request has ended and the ops-manager has cleaned up
// after it (its finalizer is gone).
func waitRequestEnded(t testing.TB, ctx context.Context, ns, name string) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	return waitRequest(t, ctx, ns, name, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return r.Status.Phase.Ended() && len(r.Finalizers) == 0
	})
}

func describeRequest(r *opsv1alpha1.PostgresOpsRequest) string {
	if r == nil {
		return "(not found)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "request %s/%s phase=%q finalizers=%v", r.Namespace, r.Name, r.Status.Phase, r.Finalizers)
	for _, c := range r.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

func describePostgres(pg *kubedbv1.Postgres) string {
	if pg == nil {
		return "(not found)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "postgres %s/%s phase=%q", pg.Namespace, pg.Name, pg.Status.Phase)
	for _, c := range pg.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// authCredential reads the credential in the database's auth Secret.
func authCredential(t testing.TB, ctx context.Context, ns, db string) credentialPair {
	t.Helper()
	pg := getPostgres(t, ctx, ns, db)
	require.NotNil(t, pg.Spec.AuthSecret)
	s := getSecret(t, ctx, ns, pg.Spec.AuthSecret.Name)
	return credentialPair{string(s.Data["username"]), string(s.Data["password"])}
}

// primaryTarget reaches the primary through its Service's ClusterIP, as the operators do.
func primaryTarget(t testing.TB, ctx context.Context, ns, db string) credential.Target {
	t.Helper()
	svc, err := env.kube.CoreV1().Services(ns).Get(ctx, db, metav1.GetOptions{})
	require.NoError(t, err)
	return credential.Target{Host: svc.Spec.ClusterIP, Port: kubedbv1.PostgresPort, SSLMode: "disable", ConnectTimeout: 10 * time.Second}
}

func podUIDs(t testing.TB, ctx context.Context, ns, db string) map[string]types.UID {
	t.Helper()
	pods, err := env.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: kubedbv1.LabelInstance + "=" + db})
	require.NoError(t, err)
	uids := map[string]types.UID{}
	for _, p := range pods.Items {
		uids[p.Name] = p.UID
	}
	return uids
}

func setHalted(t testing.TB, ctx context.Context, ns, db string, halted bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"halted":%t}}`, halted)
	_, err := env.pgops.KubedbV1().Postgreses(ns).Patch(ctx, db, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
}

// withoutSecretUpdates takes update and patch on Secrets away from the ops-manager's
// ClusterRole; the returned func gives them back.
func withoutSecretUpdates(t testing.TB, ctx context.Context) func() {
	t.Helper()
	roles := env.kube.RbacV1().ClusterRoles()
	original, err := roles.Get(ctx, "pgops-ops-manager", metav1.GetOptions{})
	require.NoError(t, err)
	reduced := original.DeepCopy()
	for i, rule := range reduced.Rules {
		if len(rule.Resources) == 1 && rule.Resources[0] == "secrets" {
			reduced.Rules[i].Verbs = []string{"get", "list", "watch", "create", "delete"}
		}
	}
	_, err = roles.Update(ctx, reduced, metav1.UpdateOptions{})
	require.NoError(t, err)
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		latest, err := roles.Get(context.Background(), "pgops-ops-manager", metav1.GetOptions{})
		require.NoError(t, err)
		latest.Rules = original.Rules
		_, err = roles.Update(context.Background(), latest, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	t.Cleanup(restore)
	return restore
}

// watchForLeaks registers secrets that must never show up in the operators' logs, the
// PostgreSQL server logs, events, or any status; the check runs when the test ends.
func watchForLeaks(t testing.TB, secrets ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		texts := map[string]string{}
		for _, name := range []string{"provisioner", "ops-manager"} {
			data, _ := os.ReadFile(operatorLog(name))
			texts[name+" log"] = string(data)
		}
		podLogs, _ := filepath.Glob(filepath.Join(env.workDir, "node", "logs", "*.log"))
		for _, path := range podLogs {
			data, _ := os.ReadFile(path)
			texts[path] = string(data)
		}
		events, err := env.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, e := range events.Items {
			texts["event "+e.Namespace+"/"+e.Name] = e.Reason + " " + e.Message
		}
		reqs, err := env.pgops.OpsV1alpha1().PostgresOpsRequests("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for i := range reqs.Items {
			texts["status of "+reqs.Items[i].Name] = describeRequest(&reqs.Items[i])
		}
		pgs, err := env.pgops.KubedbV1().Postgreses("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for i := range pgs.Items {
			texts["status of "+pgs.Items[i].Name] = describePostgres(&pgs.Items[i])
		}
		for where, text := range texts {
			for _, s := range secrets {
				if s != "" && strings.Contains(text, s) {
					t.Errorf("a password leaked into %s", where)
				}
			}
		}
	})
}

// podExec runs argv in the database container of pod ns/name as kubectl exec does, and
// returns its standard output.
func podExec(ctx context.Context, ns, pod string, argv ...string) ([]byte, error) {
	return kubenode.Exec(ctx, env.cluster.AdminConfig(), ns, pod, provisioner.ContainerName, argv...)
}
