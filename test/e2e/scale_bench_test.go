package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	"github.com/pgops/pgops/pkg/podstatus"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// BenchmarkRotationAtScale rotates N one-replica databases at once, on the local control
// plane with real pods and the operators at their default settings: 1 and 20 in restart mode
// AllPods, then all of them (200, or PGOPS_SCALE_DATABASES) in mode None. Per round it
// reports:
//   - ns/op: the makespan, from the first request created to the last seen ended;
//   - each rotation's total (created to seen ended), its pod's restart window (eviction seen
//     to the new pod seen Ready) and the controller overhead (total minus window): median,
//     p90 and max;
//   - the operators' API writes per rotation by resource, and their conflicts, read from the
//     API server's audit log (events excluded, as they are not in it);
//   - the operators' CPU seconds and resident memory.
//
// Run by `make bench`. PGOPS_KEEP_E2E=1 keeps each round's audit log and the control
// plane's logs; PGOPS_PROFILE_DIR=dir writes a CPU profile of the API server per round.
func BenchmarkRotationAtScale(b *testing.B) {
	ctx := testContext(b, 40*time.Minute)
	size := 200
	if v, err := strconv.Atoi(os.Getenv("PGOPS_SCALE_DATABASES")); err == nil && v > 0 {
		size = v
	}
	restartOperatorsWithDefaults(b, ctx)
	ns := newNamespace(b, ctx)
	dbs := provisionMany(b, ctx, ns, size)
	idleCost(b, ctx, size)
	for _, round := range []struct {
		n    int
		mode opsv1alpha1.RestartMode
	}{{1, opsv1alpha1.RestartAllPods}, {min(20, size), opsv1alpha1.RestartAllPods}, {size, opsv1alpha1.RestartNone}} {
		b.Run(fmt.Sprintf("databases=%d/%s", round.n, round.mode), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rotateAtOnce(b, ctx, ns, dbs[:round.n], round.mode)
			}
		})
	}
}

// idleCost prints where the machine's CPU goes while size databases run and nothing
// rotates: the background every round's figures stand on.
func idleCost(b *testing.B, ctx context.Context, size int) {
	b.Helper()
	u := measureIdle(b, ctx, 15*time.Second)
	fmt.Fprintf(os.Stderr, "idle with %d databases, %s\n", size, u)
}

// idleUsage is where the machine's CPU went over a window, in cores busy on average.
type idleUsage struct {
	window                 time.Duration
	user, system           float64
	kubelets, containerd   float64
	proxy, pods, operators float64
}

func (u idleUsage) total() float64 { return u.user + u.system }

func (u idleUsage) String() string {
	return fmt.Sprintf("cores busy over %s: user %.3f, system %.3f; kubelets %.3f, containerd (with shims and runc) %.3f, "+
		"kube-proxy %.3f, pods (agents, PostgreSQL and its backends) %.3f, operators %.3f",
		u.window, u.user, u.system, u.kubelets, u.containerd, u.proxy, u.pods, u.operators)
}

// measureIdle measures, over window, the machine's busy cores and their split by process.
func measureIdle(b *testing.B, ctx context.Context, window time.Duration) idleUsage {
	b.Helper()
	before, err := testenv.ReadCPUShares()
	if err != nil {
		b.Fatal(err)
	}
	nodesBefore := env.nodes.CPUTime()
	opsBefore := processUsage(b)
	start := time.Now()
	select {
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	case <-time.After(window):
	}
	after, err := testenv.ReadCPUShares()
	if err != nil {
		b.Fatal(err)
	}
	nodesAfter := env.nodes.CPUTime()
	opsAfter := processUsage(b)
	d := time.Since(start)
	cores := before.Cores(after, d)
	part := func(name string) float64 { return testenv.CoresBusy(nodesBefore[name], nodesAfter[name], d) }
	u := idleUsage{window: d.Round(time.Second), user: cores["user"], system: cores["system"],
		kubelets: part("kubelet"), containerd: part("containerd"), proxy: part("kube-proxy"), pods: part("pods")}
	for _, name := range []string{"pgops-provisioner", "pgops-ops-manager"} {
		u.operators += testenv.CoresBusy(opsBefore[name].CPU, opsAfter[name].CPU, d)
	}
	return u
}

// benchClients talk to the API server as admin without client-side throttling, so the
// benchmark's own requests never hold up the operators'.
func benchClients(t testing.TB) (kubernetes.Interface, pgopsclient.Interface) {
	cfg := env.cluster.AdminConfig()
	cfg.QPS, cfg.Burst = 2000, 2000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pgops, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kube, pgops
}

// provisionWave is how many databases provisionMany initialises at once. 200 initdbs
// started together on 2 cores starve every exec probe of the one node: liveness probes
// time out, kill servers that then replay their WAL under the same load, and the node
// never settles (seen: 66 of 200 Ready after 20 minutes). A real cluster spreads such pods
// over nodes by their CPU requests; the benchmark measures rotations, not that storm.
const provisionWave = 25

// provisionMany creates n one-replica databases in ns, provisionWave at a time, and waits
// until all are Ready.
func provisionMany(b *testing.B, ctx context.Context, ns string, n int) []string {
	b.Helper()
	started := time.Now()
	_, pgops := benchClients(b)
	const bound = 20 * time.Minute // 200 initdbs on 2 cores take minutes
	deadline := started.Add(bound)
	dbs := make([]string, n)
	for from := 0; from < n; from += provisionWave {
		to := min(from+provisionWave, n)
		for i := from; i < to; i++ {
			dbs[i] = fmt.Sprintf("db-%03d", i)
			createPostgres(b, ctx, ns, dbs[i], 1)
		}
		ready := 0
		err := wait.PollUntilContextTimeout(ctx, time.Second, time.Until(deadline), true, func(ctx context.Context) (bool, error) {
			list, err := pgops.KubedbV1().Postgreses(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			ready = 0
			for _, pg := range list.Items {
				if pg.Status.Phase == kubedbv1.DatabasePhaseReady {
					ready++
				}
			}
			return ready == to, nil
		})
		if err != nil {
			b.Fatalf("%d of %d databases were Ready after %s: %v", ready, to, time.Since(started).Round(time.Second), err)
		}
	}
	fmt.Fprintf(os.Stderr, "provisioned %d databases, %d at a time, in %s\n", n, provisionWave, time.Since(started).Round(time.Second))
	return dbs
}

// scaleWatch records, as the benchmark sees them, when each request ended and when each pod
// was evicted and came back Ready.
type scaleWatch struct {
	mu      sync.Mutex
	ended   map[string]time.Time // request name
	evicted map[string]time.Time // pod name
	ready   map[string]time.Time // pod name: the first Ready of a pod created after evicted
	podUID  map[string]string
	stop    context.CancelFunc
}

func watchRound(ctx context.Context, kube kubernetes.Interface, pgops pgopsclient.Interface, ns string) *scaleWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &scaleWatch{ended: map[string]time.Time{}, evicted: map[string]time.Time{}, ready: map[string]time.Time{},
		podUID: map[string]string{}, stop: cancel}
	pgInf := pgopsinformers.NewSharedInformerFactoryWithOptions(pgops, 0, pgopsinformers.WithNamespace(ns))
	kubeInf := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0, kubeinformers.WithNamespace(ns))
	onRequest := func(obj interface{}) {
		req, ok := obj.(*opsv1alpha1.PostgresOpsRequest)
		if !ok || !req.Status.Phase.Ended() {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, seen := w.ended[req.Name]; !seen {
			w.ended[req.Name] = time.Now()
		}
	}
	_, _ = pgInf.Ops().V1alpha1().PostgresOpsRequests().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onRequest, UpdateFunc: func(_, obj interface{}) { onRequest(obj) },
	})
	onPod := func(obj interface{}, deleted bool) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		first, known := w.podUID[pod.Name]
		switch {
		case !known:
			w.podUID[pod.Name] = string(pod.UID)
		case deleted || pod.DeletionTimestamp != nil:
			if _, seen := w.evicted[pod.Name]; !seen && first == string(pod.UID) {
				w.evicted[pod.Name] = now
			}
		case string(pod.UID) != first && podstatus.Ready(pod):
			if _, seen := w.ready[pod.Name]; !seen {
				w.ready[pod.Name] = now
			}
		}
	}
	_, _ = kubeInf.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { onPod(obj, false) },
		UpdateFunc: func(_, obj interface{}) { onPod(obj, false) },
		DeleteFunc: func(obj interface{}) { onPod(obj, true) },
	})
	pgInf.Start(ctx.Done())
	kubeInf.Start(ctx.Done())
	pgInf.WaitForCacheSync(ctx.Done())
	kubeInf.WaitForCacheSync(ctx.Done())
	return w
}

// endedAt is when the watch saw request name end, or the zero time.
func (w *scaleWatch) endedAt(name string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ended[name]
}

// rotateAuthRequest is a RotateAuth of database db in restart mode mode, as the benchmarks
// create it with the typed client: a kubectl run would add its own start-up to the figures.
func rotateAuthRequest(ns, name, db string, mode opsv1alpha1.RestartMode) *opsv1alpha1.PostgresOpsRequest {
	return &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: db},
			Timeout:    &metav1.Duration{Duration: 10 * time.Minute},
			RotateAuth: &opsv1alpha1.RotateAuthOptions{Restart: mode},
		},
	}
}

// restartWindows is the sum of the pods' restart windows, from eviction seen to the new
// pod seen Ready.
func (w *scaleWatch) restartWindows() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var sum time.Duration
	for pod, evicted := range w.evicted {
		if ready, ok := w.ready[pod]; ok {
			sum += ready.Sub(evicted)
		}
	}
	return sum
}

// rotateAtOnce creates one RotateAuth per database, all at once, waits until every one has
// ended and let go of its finalizer, and reports the round.
func rotateAtOnce(b *testing.B, ctx context.Context, ns string, dbs []string, mode opsv1alpha1.RestartMode) {
	b.Helper()
	kube, pgops := benchClients(b)
	w := watchRound(ctx, kube, pgops, ns)
	defer w.stop()
	auditFrom, idleCores := settle(b, ctx)
	usageBefore := processUsage(b)

	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	created := make(map[string]time.Time, len(dbs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	limit := make(chan struct{}, 32)
	profiled := profileAPIServer(ctx, kube, b.Name(), len(dbs))
	b.ResetTimer()
	start := time.Now()
	for _, db := range dbs {
		name := fmt.Sprintf("%s-rotate-%s", db, suffix)
		wg.Add(1)
		limit <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-limit }()
			req := rotateAuthRequest(ns, name, db, mode)
			at := time.Now()
			if _, err := pgops.OpsV1alpha1().PostgresOpsRequests(ns).Create(ctx, req, metav1.CreateOptions{}); err != nil {
				b.Errorf("creating %s: %v", name, err)
				return
			}
			mu.Lock()
			created[name] = at
			mu.Unlock()
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	endedOfRound := func() int {
		n := 0
		for name := range created {
			if _, ok := w.ended[name]; ok {
				n++
			}
		}
		return n
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(context.Context) (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return endedOfRound() == len(created), nil
	})
	makespan := time.Since(start)
	b.StopTimer()
	if err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		b.Fatalf("only %d of %d rotations ended", endedOfRound(), len(created))
	}
	// Wait for the cleanups (finalizers), so their writes are counted with the round.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, r := range list.Items {
			if _, ours := created[r.Name]; ours && len(r.Finalizers) > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatalf("requests kept their finalizers: %v", err)
	}
	time.Sleep(2 * time.Second) // the provisioner's status writes after the resumes
	<-profiled
	usageAfter := processUsage(b)
	events, _, err := localcluster.ReadAuditLog(env.cluster.AuditLogPath(), auditFrom)
	if err != nil {
		b.Fatal(err)
	}
	if os.Getenv("PGOPS_KEEP_E2E") != "" {
		keepAuditLog(b, auditFrom)
	}

	list, err := pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var totals, windows, overheads []time.Duration
	databaseOf := map[string]string{}
	w.mu.Lock()
	for _, r := range list.Items {
		databaseOf[r.Name] = r.Spec.DatabaseRef.Name
		at, ours := created[r.Name]
		if !ours {
			continue
		}
		if r.Status.Phase != opsv1alpha1.OpsRequestPhaseSuccessful {
			b.Errorf("%s ended %s: %v", r.Name, r.Status.Phase, meta.FindStatusCondition(r.Status.Conditions, opsv1alpha1.ConditionFailed))
			continue
		}
		total := w.ended[r.Name].Sub(at)
		var window time.Duration
		pod := r.Spec.DatabaseRef.Name + "-0"
		if evicted, ok := w.evicted[pod]; ok {
			if ready, ok := w.ready[pod]; ok {
				window = ready.Sub(evicted)
			}
		}
		totals, windows, overheads = append(totals, total), append(windows, window), append(overheads, total-window)
	}
	w.mu.Unlock()

	n := float64(len(dbs))
	b.ReportMetric(makespan.Seconds(), "makespan-s")
	b.ReportMetric(idleCores, "idle-busy-cores")
	reportDurations(b, "total", totals)
	reportDurations(b, "overhead", overheads)
	if mode != opsv1alpha1.RestartNone {
		reportDurations(b, "restart", windows)
	}
	reportDurations(b, "pause-ack", pauseAcks(events, databaseOf))
	writes, conflicts, reads := map[string]int{}, 0, 0
	for _, e := range events {
		// Events are not writes of the rotation's objects, and leases are leader election.
		if e.Operator() == "" || e.ObjectRef.Resource == "events" || e.ObjectRef.Resource == "leases" {
			continue
		}
		if !e.Write() {
			reads++
			continue
		}
		key := e.Verb + " " + e.Resource() + " (" + strings.TrimPrefix(e.Operator(), "pgops-") + ")"
		if e.ResponseStatus.Code == 409 {
			conflicts++
			key += " conflicts"
		}
		writes[key]++
	}
	total := 0
	keys := make([]string, 0, len(writes))
	for k, v := range writes {
		keys = append(keys, k)
		total += v
	}
	sort.Strings(keys)
	var table strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&table, "\n  %-60s %6.2f", k, float64(writes[k])/n)
	}
	// Printed, not logged: a benchmark's log is cut after a few lines.
	fmt.Printf("%s: %d rotations, makespan %s; operator API writes per rotation (events and leases excluded):%s\n",
		b.Name(), len(dbs), makespan.Round(time.Millisecond), table.String())
	b.ReportMetric(float64(total)/n, "writes/rotation")
	b.ReportMetric(float64(conflicts)/n, "conflicts/rotation")
	b.ReportMetric(float64(reads)/n, "reads/rotation")
	for name, after := range usageAfter {
		short := strings.TrimPrefix(name, "pgops-")
		b.ReportMetric((after.CPU - usageBefore[name].CPU).Seconds(), short+"-cpu-s")
		if strings.HasPrefix(name, "pgops-") {
			b.ReportMetric(float64(after.PeakRSS)/(1<<20), short+"-peak-rss-MiB")
		}
	}
	// How busy the machine's cores were from the first request to the last cleanup.
	b.ReportMetric((usageAfter["machine"].CPU-usageBefore["machine"].CPU).Seconds()/time.Since(start).Seconds(), "busy-cores")
}

// profileAPIServer takes a CPU profile of the API server while a round runs, into
// $PGOPS_PROFILE_DIR/<round>.pprof (read it with go tool pprof), and closes the channel it
// returns when done. Without PGOPS_PROFILE_DIR it does nothing.
func profileAPIServer(ctx context.Context, kube kubernetes.Interface, round string, databases int) <-chan struct{} {
	done := make(chan struct{})
	dir := os.Getenv("PGOPS_PROFILE_DIR")
	if dir == "" {
		close(done)
		return done
	}
	seconds := 8
	if databases > 50 {
		seconds = 30
	}
	go func() {
		defer close(done)
		raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(seconds)).Timeout(time.Minute).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, strings.NewReplacer("/", "_", "=", "-").Replace(round)+".pprof"), raw, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "profiling the API server:", err)
		}
	}()
	return done
}

// settle waits until the operators have written nothing for a few seconds (a previous
// round's or the provisioning's last status writes), and returns the audit log's offset.
//
// It also returns how busy the machine's cores were meanwhile, with no rotation running:
// the background of that many databases (probes, health checks, PostgreSQL's own
// processes).
func settle(b *testing.B, ctx context.Context) (int64, float64) {
	b.Helper()
	_, offset, err := localcluster.ReadAuditLog(env.cluster.AuditLogPath(), 0)
	if err != nil {
		b.Fatal(err)
	}
	busyFrom, _, err := testenv.MachineBusy()
	if err != nil {
		b.Fatal(err)
	}
	started := time.Now()
	quietSince := time.Now()
	for time.Since(quietSince) < 3*time.Second && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		events, next, err := localcluster.ReadAuditLog(env.cluster.AuditLogPath(), offset)
		if err != nil {
			b.Fatal(err)
		}
		offset = next
		for _, e := range events {
			if e.Write() && e.ObjectRef.Resource != "events" && e.ObjectRef.Resource != "leases" {
				quietSince = time.Now()
			}
		}
	}
	busy, _, err := testenv.MachineBusy()
	if err != nil {
		b.Fatal(err)
	}
	return offset, (busy - busyFrom).Seconds() / time.Since(started).Seconds()
}

// keepAuditLog copies the round's part of the audit log next to the operators' logs.
func keepAuditLog(b *testing.B, from int64) {
	src, err := os.Open(env.cluster.AuditLogPath())
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Seek(from, 0); err != nil {
		b.Fatal(err)
	}
	name := strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()) + ".audit.jsonl"
	dst, err := os.Create(filepath.Join(env.workDir, name))
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		b.Fatal(err)
	}
}

// pauseAcks are, per request, the time from the ops-manager's first status write of the
// request (its plan, which asks for the pause) to the provisioner's next status write of the
// request's database (the grant), from the audit log. databaseOf maps a request's name to
// its database's.
func pauseAcks(events []localcluster.AuditEvent, databaseOf map[string]string) []time.Duration {
	asked := map[string]time.Time{} // by namespace/database
	var acks []time.Duration
	for _, e := range events {
		if e.Verb != "update" || e.ResponseStatus.Code != 200 {
			continue
		}
		switch {
		case e.Resource() == "postgresopsrequests/status" && e.Operator() == "pgops-ops-manager":
			db, ours := databaseOf[e.ObjectRef.Name]
			key := e.ObjectRef.Namespace + "/" + db
			if _, seen := asked[key]; ours && !seen {
				asked[key] = e.StageTimestamp.Time
			}
		case e.Resource() == "postgreses/status" && e.Operator() == "pgops-provisioner":
			key := e.ObjectRef.Namespace + "/" + e.ObjectRef.Name
			if at, seen := asked[key]; seen && !at.IsZero() {
				acks = append(acks, e.StageTimestamp.Sub(at))
				asked[key] = time.Time{} // counted
			}
		}
	}
	return acks
}

// reportDurations reports the median, p90 and max of ds in milliseconds.
func reportDurations(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	b.ReportMetric(float64(at(0.5).Milliseconds()), what+"-median-ms")
	b.ReportMetric(float64(at(0.9).Milliseconds()), what+"-p90-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), what+"-max-ms")
}

// processUsage reads the CPU time and memory of both operators and of the control plane's
// components, and the machine's busy CPU time under the name "machine".
func processUsage(t testing.TB) map[string]testenv.Usage {
	env.mu.Lock()
	defer env.mu.Unlock()
	out := map[string]testenv.Usage{}
	for name, op := range map[string]*testenv.Operator{"pgops-provisioner": env.provisioner, "pgops-ops-manager": env.opsManager} {
		u, err := op.Usage()
		if err != nil {
			t.Fatal(err)
		}
		out[name] = u
	}
	for name, pid := range env.cluster.Pids() {
		if u, err := testenv.ProcessUsage(pid); err == nil {
			out[name] = u
		}
	}
	busy, _, err := testenv.MachineBusy()
	if err != nil {
		t.Fatal(err)
	}
	out["machine"] = testenv.Usage{CPU: busy}
	return out
}
