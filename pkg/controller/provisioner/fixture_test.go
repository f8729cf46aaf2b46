package provisioner

import (
	"context"
	"flag"
	"fmt"
	"io"
	"k8s.io/klog/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/generated/clientset/versioned/fake"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
)

const testNS = "demo"

// stubHealth is a HealthChecker that returns err and records what it was asked.
type stubHealth struct {
	mu    sync.Mutex
	err   error
	calls []PrimaryEndpoint
	// notStreaming are standbys the stub primary does not see in pg_stat_replication.
	notStreaming map[string]bool
	// refused are passwords the stub primary rejects as a wrong credential.
	refused map[string]bool
	// settings are the stub primary's synchronous settings; replicationCalls the
	// Replication calls.
	settings         credential.SynchronousSettings
	replicationCalls []PrimaryEndpoint
	// duringCheck, when set, runs inside CheckPrimary: another writer acting while a
	// health check takes its time.
	duringCheck func()
}

func (s *stubHealth) Replication(_ context.Context, ep PrimaryEndpoint) (ReplicationReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicationCalls = append(s.replicationCalls, ep)
	if s.err != nil {
		return ReplicationReport{}, s.err
	}
	var report ReplicationReport
	if ep.Synchronous != nil && *ep.Synchronous != s.settings {
		s.settings, report.SettingsChanged = *ep.Synchronous, true
	}
	for _, name := range ep.Standbys {
		if !s.notStreaming[name] {
			state := "async"
			if s.settings.StandbyNames != "" && strings.Contains(s.settings.StandbyNames, `"`+name+`"`) {
				state = "quorum"
			}
			report.Standbys = append(report.Standbys, credential.Standby{Name: name, SyncState: state})
		}
	}
	return report, nil
}

func (s *stubHealth) CheckPrimary(_ context.Context, ep PrimaryEndpoint) error {
	if s.duringCheck != nil {
		s.duringCheck()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, ep)
	if s.refused[ep.Password] {
		return fmt.Errorf("stub: %w", credential.ErrAuthFailed)
	}
	return s.err
}

type fixture struct {
	t        *testing.T
	ctx      context.Context
	kube     *k8sfake.Clientset
	pgops    *fake.Clientset
	kubeInf  informers.SharedInformerFactory
	pgInf    pgopsinformers.SharedInformerFactory
	c        *Controller
	health   *stubHealth
	recorder *record.FakeRecorder
	events   []string
}

// newFixture builds a controller over fake clientsets holding pgs and kubeObjs, with the
// informer caches filled from them (kube objects only when labelled as managed by KubeDB, as
// the production informers are filtered).
func newFixture(t *testing.T, pgs []*kubedbv1.Postgres, kubeObjs ...runtime.Object) *fixture {
	t.Helper()
	var pgObjs []runtime.Object
	for _, pg := range pgs {
		pgObjs = append(pgObjs, pg)
	}
	f := &fixture{
		t:        t,
		ctx:      context.Background(),
		kube:     k8sfake.NewClientset(kubeObjs...),
		pgops:    fake.NewSimpleClientset(pgObjs...),
		health:   &stubHealth{},
		recorder: record.NewFakeRecorder(1000),
	}
	f.kubeInf = informers.NewSharedInformerFactory(f.kube, 0)
	f.pgInf = pgopsinformers.NewSharedInformerFactory(f.pgops, 0)
	c, err := New(f.ctx, f.kube, f.pgops, f.kubeInf, f.pgInf, Config{
		HealthChecker: f.health,
		Recorder:      f.recorder,
		StatusPeriod:  time.Hour,
	})
	require.NoError(t, err)
	c.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	f.c = c
	t.Cleanup(c.queue.ShutDown)
	f.refresh()
	return f
}

// refresh replaces the informer caches with what the fake API servers hold now, then clears
// the recorded actions.
func (f *fixture) refresh() {
	f.t.Helper()
	ctx := f.ctx
	managed := func(o metav1.Object) bool { return o.GetLabels()[LabelManagedBy] == ManagedByValue }

	pgs, err := f.pgops.KubedbV1().Postgreses("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	var items []interface{}
	for i := range pgs.Items {
		items = append(items, &pgs.Items[i])
	}
	require.NoError(f.t, f.pgInf.Kubedb().V1().Postgreses().Informer().GetIndexer().Replace(items, ""))

	replace := func(inf cache.SharedIndexInformer, objs []metav1.Object) {
		var items []interface{}
		for _, o := range objs {
			if managed(o) {
				items = append(items, o)
			}
		}
		require.NoError(f.t, inf.GetIndexer().Replace(items, ""))
	}
	sts, err := f.kube.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	var objs []metav1.Object
	for i := range sts.Items {
		objs = append(objs, &sts.Items[i])
	}
	replace(f.kubeInf.Apps().V1().StatefulSets().Informer(), objs)

	svcs, err := f.kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	objs = nil
	for i := range svcs.Items {
		objs = append(objs, &svcs.Items[i])
	}
	replace(f.kubeInf.Core().V1().Services().Informer(), objs)

	pods, err := f.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	objs = nil
	for i := range pods.Items {
		objs = append(objs, &pods.Items[i])
	}
	replace(f.kubeInf.Core().V1().Pods().Informer(), objs)

	secrets, err := f.kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	objs = nil
	for i := range secrets.Items {
		objs = append(objs, &secrets.Items[i])
	}
	replace(f.kubeInf.Core().V1().Secrets().Informer(), objs)

	reqs, err := f.pgops.OpsV1alpha1().PostgresOpsRequests("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	items = nil
	for i := range reqs.Items {
		items = append(items, &reqs.Items[i])
	}
	require.NoError(f.t, f.pgInf.Ops().V1alpha1().PostgresOpsRequests().Informer().GetIndexer().Replace(items, ""))

	cms, err := f.kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	objs = nil
	for i := range cms.Items {
		objs = append(objs, &cms.Items[i])
	}
	replace(f.kubeInf.Core().V1().ConfigMaps().Informer(), objs)

	pdbs, err := f.kube.PolicyV1().PodDisruptionBudgets("").List(ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	objs = nil
	for i := range pdbs.Items {
		objs = append(objs, &pdbs.Items[i])
	}
	replace(f.kubeInf.Policy().V1().PodDisruptionBudgets().Informer(), objs)

	f.kube.ClearActions()
	f.pgops.ClearActions()
}

// later moves the controller's clock on by d.
func (f *fixture) later(d time.Duration) {
	now := f.c.now().Add(d)
	f.c.now = func() time.Time { return now }
}

// sync runs one syncHandler pass for name and collects the events it emitted.
func (f *fixture) sync(name string) error {
	f.t.Helper()
	err := f.c.syncHandler(f.ctx, cache.ObjectName{Namespace: testNS, Name: name})
	f.drainEvents()
	return err
}

// mustSync syncs and refreshes the caches, as informers would, for multi-step scenarios.
func (f *fixture) mustSync(name string) {
	f.t.Helper()
	require.NoError(f.t, f.sync(name))
}

func (f *fixture) drainEvents() {
	for {
		select {
		case e := <-f.recorder.Events:
			f.events = append(f.events, e)
		default:
			return
		}
	}
}

// kubeWrites are the kube write actions as "verb resource name", e.g. "create services x".
func (f *fixture) kubeWrites() []string {
	return writes(f.kube.Actions())
}

func (f *fixture) pgWrites() []string {
	return writes(f.pgops.Actions())
}

func writes(actions []core.Action) []string {
	var out []string
	for _, a := range actions {
		verb := a.GetVerb()
		if verb == "get" || verb == "list" || verb == "watch" {
			continue
		}
		res := a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			res += "/" + sub
		}
		name := ""
		switch act := a.(type) {
		case core.CreateAction:
			if o, err := meta.Accessor(act.GetObject()); err == nil {
				name = o.GetName()
			}
		case core.UpdateAction:
			if o, err := meta.Accessor(act.GetObject()); err == nil {
				name = o.GetName()
			}
		case core.DeleteAction:
			name = act.GetName()
		case core.PatchAction:
			name = act.GetName()
		}
		out = append(out, verb+" "+res+" "+name)
	}
	return out
}

func (f *fixture) hasEvent(typ, reason, substr string) bool {
	for _, e := range f.events {
		if strings.HasPrefix(e, typ+" "+reason+" ") && strings.Contains(e, substr) {
			return true
		}
	}
	return false
}

func (f *fixture) postgres(name string) *kubedbv1.Postgres {
	f.t.Helper()
	pg, err := f.pgops.KubedbV1().Postgreses(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return pg
}

func (f *fixture) statefulSet(name string) *appsv1.StatefulSet {
	f.t.Helper()
	sts, err := f.kube.AppsV1().StatefulSets(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return sts
}

func (f *fixture) service(name string) *corev1.Service {
	f.t.Helper()
	svc, err := f.kube.CoreV1().Services(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return svc
}

func (f *fixture) secret(name string) *corev1.Secret {
	f.t.Helper()
	s, err := f.kube.CoreV1().Secrets(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return s
}

// collectGarbageOf deletes what the garbage collector deletes in a foreground deletion of
// owner: every object whose owner references name it.
func (f *fixture) collectGarbageOf(owner metav1.Object) {
	f.t.Helper()
	for resource, kind := range map[string]schema.GroupVersionKind{
		"statefulsets":           appsv1.SchemeGroupVersion.WithKind("StatefulSet"),
		"services":               corev1.SchemeGroupVersion.WithKind("Service"),
		"secrets":                corev1.SchemeGroupVersion.WithKind("Secret"),
		"configmaps":             corev1.SchemeGroupVersion.WithKind("ConfigMap"),
		"persistentvolumeclaims": corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"),
		"poddisruptionbudgets":   policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"),
	} {
		gvr := kind.GroupVersion().WithResource(resource)
		list, err := f.kube.Tracker().List(gvr, kind, testNS)
		require.NoError(f.t, err)
		items, err := meta.ExtractList(list)
		require.NoError(f.t, err)
		for _, item := range items {
			obj := item.(metav1.Object)
			for _, ref := range obj.GetOwnerReferences() {
				if ref.UID == owner.GetUID() {
					require.NoError(f.t, f.kube.Tracker().Delete(gvr, testNS, obj.GetName()))
					break
				}
			}
		}
	}
	f.refresh()
}

func (f *fixture) exists(kind, name string) bool {
	f.t.Helper()
	var err error
	switch kind {
	case "statefulset":
		_, err = f.kube.AppsV1().StatefulSets(testNS).Get(f.ctx, name, metav1.GetOptions{})
	case "service":
		_, err = f.kube.CoreV1().Services(testNS).Get(f.ctx, name, metav1.GetOptions{})
	case "secret":
		_, err = f.kube.CoreV1().Secrets(testNS).Get(f.ctx, name, metav1.GetOptions{})
	case "configmap":
		_, err = f.kube.CoreV1().ConfigMaps(testNS).Get(f.ctx, name, metav1.GetOptions{})
	case "pvc":
		_, err = f.kube.CoreV1().PersistentVolumeClaims(testNS).Get(f.ctx, name, metav1.GetOptions{})
	case "pdb":
		_, err = f.kube.PolicyV1().PodDisruptionBudgets(testNS).Get(f.ctx, name, metav1.GetOptions{})
	default:
		f.t.Fatalf("unknown kind %s", kind)
	}
	return err == nil
}

// newPG returns a Postgres "name" in testNS with version 16.4 and one replica.
func newPG(name string, mutate ...func(*kubedbv1.Postgres)) *kubedbv1.Postgres {
	pg := &kubedbv1.Postgres{
		TypeMeta: metav1.TypeMeta{APIVersion: kubedbv1.SchemeGroupVersion.String(), Kind: kubedbv1.ResourceKindPostgres},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: testNS, UID: types.UID("uid-" + name), Generation: 1,
		},
		Spec: kubedbv1.PostgresSpec{
			Version:        "16.4",
			Replicas:       ptr.To[int32](1),
			StorageType:    kubedbv1.StorageTypeDurable,
			DeletionPolicy: kubedbv1.DeletionPolicyDelete,
		},
	}
	for _, m := range mutate {
		m(pg)
	}
	return pg
}

func withReplicas(n int32) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) { pg.Spec.Replicas = ptr.To(n) }
}

func withAuthSecret(name string) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) { pg.Spec.AuthSecret = &kubedbv1.SecretReference{Name: name} }
}

func withFinalizer(pg *kubedbv1.Postgres) { pg.Finalizers = append(pg.Finalizers, Finalizer) }

func withCondition(typ string, status metav1.ConditionStatus) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) {
		meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: "Test"})
	}
}

func userSecret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// readyPod is pod <pg>-<ordinal> as the StatefulSet controller makes it.
func readyPod(pg *kubedbv1.Postgres, ordinal int, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-%d", pg.Name, ordinal), Namespace: testNS,
			UID:    types.UID(fmt.Sprintf("pod-%s-%d", pg.Name, ordinal)),
			Labels: selectorLabels(pg),
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "StatefulSet", Name: pg.Name, UID: "sts-uid", Controller: ptr.To(true),
			}},
		},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func condition(pg *kubedbv1.Postgres, typ string) *metav1.Condition {
	return meta.FindStatusCondition(pg.Status.Conditions, typ)
}

type runtimeObject = runtime.Object

func TestMain(m *testing.M) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	klog.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// addSecret creates sec on the fake API server and refreshes the caches.
func (f *fixture) addSecret(sec *corev1.Secret) {
	f.t.Helper()
	_, err := f.kube.CoreV1().Secrets(testNS).Create(f.ctx, sec, metav1.CreateOptions{})
	require.NoError(f.t, err)
	f.refresh()
}
