package opsmanager

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/agent"
	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
	pgopsfake "github.com/pgops/pgops/pkg/generated/clientset/versioned/fake"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
)

const (
	ns          = "demo"
	dbName      = "pg"
	recordName  = dbName + kubedbv1.CredentialRecordSuffix
	oldPassword = "Old-Password-123"
	superuser   = "postgres"
)

// world is a fake cluster around the controller: fake clientsets, a fake PostgreSQL and
// small stand-ins for the provisioner, the StatefulSet controller and the kubelet.
type world struct {
	t        testing.TB
	kube     *kubefake.Clientset
	pgops    *pgopsfake.Clientset
	db       *fakeDatabase
	clock    *clocktesting.FakeClock
	recorder *record.FakeRecorder
	events   []string
	uid      int

	// provisionerConfirmsPause makes the stand-in provisioner grant the pause a request asks for.
	provisionerConfirmsPause bool
	// frozen holds, per informer, the objects a lagging cache still shows: the controller's
	// cache of that kind does not see later writes (its own included) until thawed.
	frozen map[string][]runtime.Object
	// denySecretUpdates makes every Secret update fail, holding a rotation between the
	// ALTER ROLE and the Secret's update (the point of no return).
	denySecretUpdates bool
	// namespaceTerminating makes every create fail as in a namespace being deleted.
	namespaceTerminating bool
	// podsNeverReady makes restarted pods come back not Ready.
	podsNeverReady bool
	// statefulSetControllerAsleep makes the stand-in StatefulSet controller observe no
	// new template.
	statefulSetControllerAsleep bool
	// writes counts the controller's own writes ("verb resource[/subresource]"), not the
	// stand-ins'.
	writes map[string]int
	// reads counts the controller's own live reads (gets and lists) the same way.
	reads map[string]int
	// keep, when set (keepRunning), makes sync reuse one controller, whose memory of its
	// own writes and of status kept back survives between syncs, and refresh its caches
	// before each sync, as informers would.
	keep *runningController
}

type runningController struct {
	c              *Controller
	kubeInformers  kubeinformers.SharedInformerFactory
	pgopsInformers pgopsinformers.SharedInformerFactory
}

// keepRunning makes the world run one controller for all syncs, and makes the fake API
// server give requests a new resourceVersion on every write, as the real one does.
func (w *world) keepRunning() {
	w.keep = &runningController{}
	// Like the API server, a new pod template is a new generation of the StatefulSet.
	stsGVR := appsv1.SchemeGroupVersion.WithResource("statefulsets")
	w.kube.PrependReactor("update", "statefulsets", func(action clienttesting.Action) (bool, runtime.Object, error) {
		update := action.(clienttesting.UpdateAction)
		sts, ok := update.GetObject().(*appsv1.StatefulSet)
		if !ok || action.GetSubresource() != "" {
			return false, nil, nil
		}
		if stored, err := w.kube.Tracker().Get(stsGVR, ns, sts.Name); err == nil &&
			!apiequality.Semantic.DeepEqual(stored.(*appsv1.StatefulSet).Spec, sts.Spec) {
			sts.Generation = stored.(*appsv1.StatefulSet).Generation + 1
		}
		return false, nil, nil
	})
	gvr := opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests")
	react := clienttesting.ObjectReaction(w.pgops.Tracker())
	for _, verb := range []string{"update", "patch"} {
		w.pgops.PrependReactor(verb, "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
			if update, ok := action.(clienttesting.UpdateAction); ok {
				stored, err := w.pgops.Tracker().Get(gvr, ns, update.GetObject().(metav1.Object).GetName())
				if err == nil && stored.(metav1.Object).GetResourceVersion() != update.GetObject().(metav1.Object).GetResourceVersion() {
					return true, nil, apierrors.NewConflict(gvr.GroupResource(), update.GetObject().(metav1.Object).GetName(), fmt.Errorf("fake: stale resourceVersion"))
				}
			}
			handled, obj, err := react(action)
			if err != nil || obj == nil {
				return handled, obj, err
			}
			w.uid++
			bumped := obj.DeepCopyObject()
			bumped.(metav1.Object).SetResourceVersion(fmt.Sprint(w.uid))
			if err := w.pgops.Tracker().Update(gvr, bumped, ns); err != nil {
				return true, nil, err
			}
			return true, bumped, nil
		})
	}
}

func newWorld(t testing.TB, replicas int32) *world {
	t.Helper()
	w := &world{
		t:                        t,
		kube:                     kubefake.NewSimpleClientset(),
		pgops:                    pgopsfake.NewSimpleClientset(),
		db:                       newFakeDatabase(map[string]string{superuser: oldPassword}, int(replicas)-1),
		clock:                    clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)),
		recorder:                 record.NewFakeRecorder(1000),
		provisionerConfirmsPause: true,
	}
	// Like the API server, give new objects a UID and a generation.
	for _, client := range []interface {
		PrependReactor(verb, resource string, reaction clienttesting.ReactionFunc)
	}{w.kube, w.pgops} {
		client.PrependReactor("create", "*", w.defaultMetadata)
	}
	for _, client := range []interface {
		PrependReactor(verb, resource string, reaction clienttesting.ReactionFunc)
	}{w.kube, w.pgops} {
		client.PrependReactor("create", "*", w.refuseInTerminatingNamespace)
	}
	w.kube.PrependReactor("create", "pods", w.evict)
	w.kube.PrependReactor("delete", "secrets", w.deleteHonouringFinalizers)
	w.kube.PrependReactor("update", "secrets", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if w.denySecretUpdates {
			return true, nil, fmt.Errorf("fake: secrets update is forbidden")
		}
		return false, nil, nil
	})

	w.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: dbName + "-auth", Namespace: ns, Labels: ownedLabels()},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"username": []byte(superuser), "password": []byte(oldPassword)},
	})
	w.create(&kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: dbName, Namespace: ns, Generation: 1},
		Spec: kubedbv1.PostgresSpec{
			Version: "16.4", Replicas: ptr.To(replicas),
			AuthSecret: &kubedbv1.SecretReference{Name: dbName + "-auth", Kind: "Secret"},
		},
		Status: kubedbv1.PostgresStatus{Phase: kubedbv1.DatabasePhaseReady, Conditions: []metav1.Condition{
			{Type: kubedbv1.ConditionProvisioned, Status: metav1.ConditionTrue, Reason: "Provisioned"},
		}},
	})
	// The provisioner's credential record, which the pods boot from.
	w.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: recordName, Namespace: ns, Labels: kubedbv1.CredentialRecordLabels(dbName),
			Annotations: map[string]string{kubedbv1.RecordDatabaseUIDAnnotation: string(w.postgres().UID)}},
		Type: corev1.SecretTypeBasicAuth,
		Data: map[string][]byte{"username": []byte(superuser), "password": []byte(oldPassword)},
	})
	pgOwner := []metav1.OwnerReference{*metav1.NewControllerRef(w.postgres(), kubedbv1.SchemeGroupVersion.WithKind("Postgres"))}
	w.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: dbName, Namespace: ns, Labels: ownedLabels(), OwnerReferences: pgOwner},
		Spec:       corev1.ServiceSpec{ClusterIP: "127.1.0.10", Ports: []corev1.ServicePort{{Name: "primary", Port: 5432}}},
	})
	w.create(&appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: dbName, Namespace: ns, Labels: ownedLabels(), Generation: 1, OwnerReferences: pgOwner},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(replicas),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name:  "postgres",
				Ports: []corev1.ContainerPort{{Name: agent.PortName, ContainerPort: agent.DefaultProbePort}},
				Env: []corev1.EnvVar{
					secretEnv("POSTGRES_USER", recordName, "username"),
					secretEnv("POSTGRES_PASSWORD", recordName, "password"),
				},
			}}}},
		},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, UpdateRevision: "rev-1", CurrentRevision: "rev-1"},
	})
	for i := int32(0); i < replicas; i++ {
		w.create(w.readyPod(fmt.Sprintf("%s-%d", dbName, i), "rev-1"))
	}
	return w
}

func ownedLabels() map[string]string {
	return map[string]string{
		kubedbv1.LabelName: kubedbv1.NameValue, kubedbv1.LabelInstance: dbName, kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue,
	}
}

func secretEnv(name, secret, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key,
	}}}
}

func (w *world) readyPod(name, revision string) *corev1.Pod {
	labels := ownedLabels()
	labels[appsv1.ControllerRevisionHashLabelKey] = revision
	var owner []metav1.OwnerReference
	var spec corev1.PodSpec
	if obj, err := w.kube.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("statefulsets"), ns, dbName); err == nil {
		sts := obj.(*appsv1.StatefulSet)
		owner = []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}
		spec = *sts.Spec.Template.Spec.DeepCopy() // a pod is made from its StatefulSet's template
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, OwnerReferences: owner},
		Spec:       spec,
		Status: corev1.PodStatus{PodIP: podIPPrefix + name, Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		}},
	}
}

func (w *world) defaultMetadata(action clienttesting.Action) (bool, runtime.Object, error) {
	create, ok := action.(clienttesting.CreateAction)
	if !ok {
		return false, nil, nil
	}
	obj, ok := create.GetObject().(metav1.Object)
	if !ok {
		return false, nil, nil
	}
	if obj.GetUID() == "" {
		w.uid++
		obj.SetUID(types.UID(fmt.Sprintf("uid-%d", w.uid)))
	}
	if ts := obj.GetCreationTimestamp(); ts.IsZero() {
		obj.SetCreationTimestamp(metav1.NewTime(w.clock.Now()))
	}
	return false, nil, nil
}

// evict stands in for the eviction API, the StatefulSet controller and the kubelet: the
// pod is replaced by a new, ready one from the update revision.
func (w *world) evict(action clienttesting.Action) (bool, runtime.Object, error) {
	if action.GetSubresource() != "eviction" {
		return false, nil, nil
	}
	eviction := action.(clienttesting.CreateAction).GetObject().(interface{ GetName() string })
	name := eviction.GetName()
	// Reactors run under the fake's lock: use the tracker, not the clientset.
	obj, err := w.kube.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("statefulsets"), ns, dbName)
	if err != nil {
		return true, nil, err
	}
	sts := obj.(*appsv1.StatefulSet)
	if err := w.kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), ns, name); err != nil {
		return true, nil, err
	}
	pod := w.readyPod(name, sts.Status.UpdateRevision)
	if w.podsNeverReady {
		pod.Status.Conditions = nil
	}
	w.uid++
	pod.UID = types.UID(fmt.Sprintf("uid-%d", w.uid))
	return true, nil, w.kube.Tracker().Add(pod)
}

func (w *world) create(obj runtime.Object) {
	w.t.Helper()
	var err error
	switch o := obj.(type) {
	case *kubedbv1.Postgres:
		_, err = w.pgops.KubedbV1().Postgreses(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	case *opsv1alpha1.PostgresOpsRequest:
		_, err = w.pgops.OpsV1alpha1().PostgresOpsRequests(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	case *corev1.Secret:
		_, err = w.kube.CoreV1().Secrets(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	case *corev1.Service:
		_, err = w.kube.CoreV1().Services(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	case *corev1.Pod:
		_, err = w.kube.CoreV1().Pods(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	case *appsv1.StatefulSet:
		_, err = w.kube.AppsV1().StatefulSets(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
	default:
		w.t.Fatalf("cannot create %T", obj)
	}
	require.NoError(w.t, err)
}

// newController builds a fresh controller whose caches hold what the fake API server
// holds now: a controller that has just started, perhaps after a crash.
func (w *world) newController() *Controller {
	w.t.Helper()
	kubeInformers := kubeinformers.NewSharedInformerFactory(w.kube, 0)
	pgopsInformers := pgopsinformers.NewSharedInformerFactory(w.pgops, 0)
	c, err := New(w.kube, w.pgops, kubeInformers, pgopsInformers, w.recorder, w.db,
		Config{Clock: w.clock, PasswordLength: 20})
	require.NoError(w.t, err)
	w.fillCaches(kubeInformers, pgopsInformers)
	if w.keep != nil {
		w.keep.c, w.keep.kubeInformers, w.keep.pgopsInformers = c, kubeInformers, pgopsInformers
	}
	return c
}

// fillCaches makes the informers' caches hold what the fake API server holds now (or what
// a frozen cache still shows).
func (w *world) fillCaches(kubeInformers kubeinformers.SharedInformerFactory, pgopsInformers pgopsinformers.SharedInformerFactory) {
	w.t.Helper()
	ctx := context.Background()
	fill := func(indexer cache.Indexer, list runtime.Object, err error) {
		require.NoError(w.t, err)
		items, err := meta.ExtractList(list)
		require.NoError(w.t, err)
		if frozen, ok := w.frozen[fmt.Sprintf("%T", list)]; ok {
			items = frozen
		}
		objs := make([]interface{}, 0, len(items))
		for _, item := range items {
			objs = append(objs, item)
		}
		require.NoError(w.t, indexer.Replace(objs, ""))
	}
	reqs, err := w.pgops.OpsV1alpha1().PostgresOpsRequests("").List(ctx, metav1.ListOptions{})
	fill(pgopsInformers.Ops().V1alpha1().PostgresOpsRequests().Informer().GetIndexer(), reqs, err)
	pgs, err := w.pgops.KubedbV1().Postgreses("").List(ctx, metav1.ListOptions{})
	fill(pgopsInformers.Kubedb().V1().Postgreses().Informer().GetIndexer(), pgs, err)
	stss, err := w.kube.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{})
	fill(kubeInformers.Apps().V1().StatefulSets().Informer().GetIndexer(), stss, err)
	pods, err := w.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	fill(kubeInformers.Core().V1().Pods().Informer().GetIndexer(), pods, err)
	svcs, err := w.kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	fill(kubeInformers.Core().V1().Services().Informer().GetIndexer(), svcs, err)
}

// sync runs one sync of the request with a freshly started controller, then lets the
// stand-ins react.
func (w *world) sync(name string) (syncResult, error) {
	w.t.Helper()
	var c *Controller
	if w.keep != nil && w.keep.c != nil {
		c = w.keep.c
		w.fillCaches(w.keep.kubeInformers, w.keep.pgopsInformers)
	} else {
		c = w.newController()
		if w.keep == nil {
			defer c.queue.ShutDown()
		}
	}
	kubeBefore, pgopsBefore := len(w.kube.Actions()), len(w.pgops.Actions())
	res, err := c.syncHandler(context.Background(), cache.ObjectName{Namespace: ns, Name: name})
	w.countWrites(w.kube.Actions()[kubeBefore:])
	w.countWrites(w.pgops.Actions()[pgopsBefore:])
	w.drainEvents()
	w.react()
	return res, err
}

// countWrites adds the writes among actions to w.writes, and the reads to w.reads.
func (w *world) countWrites(actions []clienttesting.Action) {
	if w.writes == nil {
		w.writes = map[string]int{}
	}
	if w.reads == nil {
		w.reads = map[string]int{}
	}
	for _, a := range actions {
		key := a.GetVerb() + " " + a.GetResource().Resource
		if a.GetSubresource() != "" {
			key += "/" + a.GetSubresource()
		}
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			w.writes[key]++
		case "get", "list":
			w.reads[key]++
		}
	}
}

// totalWrites is the number of writes the controller made.
func (w *world) totalWrites() int {
	n := 0
	for _, count := range w.writes {
		n += count
	}
	return n
}

// runUntilDone syncs until the request ends (and is cleaned up), failing after limit syncs.
func (w *world) runUntilDone(name string, limit int) *opsv1alpha1.PostgresOpsRequest {
	w.t.Helper()
	for i := 0; i < limit; i++ {
		_, err := w.sync(name)
		require.NoError(w.t, err)
		req := w.request(name)
		if req.Status.Phase.Ended() && !hasFinalizer(req) {
			return req
		}
	}
	w.t.Fatalf("request %s did not finish in %d syncs: %s", name, limit, describe(w.request(name)))
	return nil
}

// freeze makes the controller's cache of list's kind (for example &kubedbv1.PostgresList{})
// keep showing what the API server holds now.
func (w *world) freeze(list runtime.Object) {
	w.t.Helper()
	var err error
	ctx := context.Background()
	switch list.(type) {
	case *kubedbv1.PostgresList:
		list, err = w.pgops.KubedbV1().Postgreses("").List(ctx, metav1.ListOptions{})
	case *appsv1.StatefulSetList:
		list, err = w.kube.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{})
	case *opsv1alpha1.PostgresOpsRequestList:
		list, err = w.pgops.OpsV1alpha1().PostgresOpsRequests("").List(ctx, metav1.ListOptions{})
	case *corev1.PodList:
		list, err = w.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	default:
		w.t.Fatalf("cannot freeze %T", list)
	}
	require.NoError(w.t, err)
	items, err := meta.ExtractList(list)
	require.NoError(w.t, err)
	if w.frozen == nil {
		w.frozen = map[string][]runtime.Object{}
	}
	w.frozen[fmt.Sprintf("%T", list)] = items
}

// deleteHonouringFinalizers deletes like the API server: an object with finalizers only
// gets a deletionTimestamp.
func (w *world) deleteHonouringFinalizers(action clienttesting.Action) (bool, runtime.Object, error) {
	del := action.(clienttesting.DeleteAction)
	gvr := del.GetResource()
	obj, err := w.kube.Tracker().Get(gvr, del.GetNamespace(), del.GetName())
	if err != nil {
		return true, nil, err
	}
	m := obj.(metav1.Object)
	if opts := del.GetDeleteOptions(); opts.Preconditions != nil && opts.Preconditions.UID != nil && *opts.Preconditions.UID != m.GetUID() {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(), fmt.Errorf("uid precondition failed"))
	}
	if len(m.GetFinalizers()) == 0 {
		return true, obj, w.kube.Tracker().Delete(gvr, del.GetNamespace(), del.GetName())
	}
	if m.GetDeletionTimestamp() == nil {
		now := metav1.NewTime(w.clock.Now())
		m.SetDeletionTimestamp(&now)
		return true, obj, w.kube.Tracker().Update(gvr, obj, del.GetNamespace())
	}
	return true, obj, nil
}

// refuseInTerminatingNamespace refuses a create as the API server's NamespaceLifecycle
// admission does in a namespace being deleted.
func (w *world) refuseInTerminatingNamespace(action clienttesting.Action) (bool, runtime.Object, error) {
	if !w.namespaceTerminating {
		return false, nil, nil
	}
	err := apierrors.NewForbidden(action.GetResource().GroupResource(), "",
		fmt.Errorf("unable to create new content in namespace %s because it is being terminated", action.GetNamespace()))
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type: corev1.NamespaceTerminatingCause, Message: "namespace " + action.GetNamespace() + " is being terminated", Field: "metadata.namespace"})
	return true, nil, err
}

// finishDeletions removes Secrets and requests whose deletion waited for finalizers that
// are gone now, as the API server does.
func (w *world) finishDeletions() {
	ctx := context.Background()
	secrets, _ := w.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	for _, s := range secrets.Items {
		if s.DeletionTimestamp != nil && len(s.Finalizers) == 0 {
			_ = w.kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("secrets"), ns, s.Name)
		}
	}
	reqs, _ := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(ctx, metav1.ListOptions{})
	for _, r := range reqs.Items {
		if r.DeletionTimestamp != nil && (len(r.Finalizers) == 0 || len(r.Finalizers) == 1 && r.Finalizers[0] == metav1.FinalizerDeleteDependents) {
			_ = w.pgops.Tracker().Delete(opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests"), ns, r.Name)
		}
	}
}

// deleteForeground deletes a request as kubectl delete --cascade=foreground does: the
// garbage collector deletes every dependent that names the request as an owner, while the
// request waits for its finalizers.
func (w *world) deleteForeground(name string) {
	w.t.Helper()
	ctx := context.Background()
	req := w.request(name)
	now := metav1.NewTime(w.clock.Now())
	req.DeletionTimestamp = &now
	req.Finalizers = append(req.Finalizers, metav1.FinalizerDeleteDependents)
	require.NoError(w.t, w.pgops.Tracker().Update(opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests"), req, ns))
	secrets, err := w.kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	require.NoError(w.t, err)
	for _, s := range secrets.Items {
		for _, ref := range s.OwnerReferences {
			if ref.UID == req.UID {
				require.NoError(w.t, w.kube.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}))
			}
		}
	}
}

// react plays the provisioner (pause handshake), the StatefulSet controller and the API
// server's end of deletions.
func (w *world) react() {
	ctx := context.Background()
	defer w.finishDeletions()
	pg, err := w.pgops.KubedbV1().Postgreses(ns).Get(ctx, dbName, metav1.GetOptions{})
	if err == nil && w.provisionerConfirmsPause {
		w.grantPause(ctx, pg)
	}
	sts, err := w.kube.AppsV1().StatefulSets(ns).Get(ctx, dbName, metav1.GetOptions{})
	if err == nil && !w.statefulSetControllerAsleep {
		revision := "rev-" + sts.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation]
		if sts.Status.UpdateRevision != revision && sts.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation] != "" {
			// The API server made the new template a new generation (the update reactor
			// above); the controller observes that generation.
			sts.Status.ObservedGeneration = sts.Generation
			sts.Status.UpdateRevision = revision
			_, err := w.kube.AppsV1().StatefulSets(ns).UpdateStatus(ctx, sts, metav1.UpdateOptions{})
			require.NoError(w.t, err)
		}
	}
}

// grantPause plays the provisioner's answer to a request that asks for the pause in its
// status, as the provisioner's grantPause does: the oldest such request gets it, once,
// unless a running request holds it, and never for a Postgres being deleted.
func (w *world) grantPause(ctx context.Context, pg *kubedbv1.Postgres) {
	reqs, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(ctx, metav1.ListOptions{})
	require.NoError(w.t, err)
	sort.Slice(reqs.Items, func(i, j int) bool { return reqs.Items[i].CreationTimestamp.Before(&reqs.Items[j].CreationTimestamp) })
	if pg.DeletionTimestamp != nil {
		return
	}
	holder := pg.Status.PausedBy
	if holder != nil && meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused) != nil {
		for _, r := range reqs.Items {
			if r.UID == holder.UID && !r.Status.Phase.Ended() {
				return
			}
		}
	}
	for _, r := range reqs.Items {
		if holder != nil && holder.UID == r.UID {
			continue // a request is granted its pause once
		}
		if r.Spec.DatabaseRef.Name == pg.Name && r.AsksForPause() && r.Status.RotateAuth.DatabaseUID == pg.UID {
			meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{
				Type: kubedbv1.ConditionPaused, Status: metav1.ConditionTrue, Reason: "Paused", Message: "paused for " + r.Name})
			pg.Status.PausedBy = &kubedbv1.OpsRequestReference{Name: r.Name, UID: r.UID}
			_, err := w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(ctx, pg, metav1.UpdateOptions{})
			require.NoError(w.t, err)
			return
		}
	}
}

func (w *world) drainEvents() {
	for {
		select {
		case e := <-w.recorder.Events:
			w.events = append(w.events, e)
		default:
			return
		}
	}
}

func (w *world) request(name string) *opsv1alpha1.PostgresOpsRequest {
	w.t.Helper()
	req, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(w.t, err)
	return req
}

func (w *world) postgres() *kubedbv1.Postgres {
	w.t.Helper()
	pg, err := w.pgops.KubedbV1().Postgreses(ns).Get(context.Background(), dbName, metav1.GetOptions{})
	require.NoError(w.t, err)
	return pg
}

func (w *world) secret(name string) *corev1.Secret {
	w.t.Helper()
	s, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(w.t, err)
	return s
}

func (w *world) newRequest(name string, mutate ...func(*opsv1alpha1.PostgresOpsRequest)) {
	req := &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: dbName},
			Apply: opsv1alpha1.ApplyOptionIfReady, Timeout: &metav1.Duration{Duration: 5 * time.Minute},
		},
	}
	for _, m := range mutate {
		m(req)
	}
	w.create(req)
	w.clock.Step(time.Second) // creation order is by timestamp
}

func describe(req *opsv1alpha1.PostgresOpsRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s finalizers=%v", req.Status.Phase, req.Finalizers)
	for _, c := range req.Status.Conditions {
		fmt.Fprintf(&b, "\n  %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// podIPPrefix makes a fake pod's IP from its name: the fake database tells its standbys
// apart by the host a target names.
const podIPPrefix = "ip-"

// fakeDatabase is an in-memory PostgreSQL with its pods' agents: roles with passwords, a
// replication count, and per standby (by host) the password in its passfile.
type fakeDatabase struct {
	mu          sync.Mutex
	passwords   map[string]string
	standbys    int
	setCalls    int
	unreachable bool
	// acceptAnyPassword is pg_hba.conf "trust": every password logs in.
	acceptAnyPassword bool
	// oldPasswordStored makes pg_authid still show the password a rotation replaced, as
	// when a DBA sets it back between the rotation's checks.
	oldPasswordStored bool
	replaced          map[string]string
	passfiles         map[string]string
	passfileWrites    int
	// notReplayed names the standbys (by host) that have not replayed the new password:
	// their agents refuse it.
	notReplayed map[string]bool
	reconnects  int
	// wakes names the standbys woken, in order; streamOnWake makes a woken standby stream.
	wakes        []string
	streamOnWake bool
	// setThenFail makes EnsurePassword change the password and then report an error, as
	// when the connection breaks after the commit.
	setThenFail bool
	// beforeSetPassword, when set, runs before EnsurePassword changes anything.
	beforeSetPassword func()
}

func newFakeDatabase(passwords map[string]string, standbys int) *fakeDatabase {
	return &fakeDatabase{passwords: passwords, standbys: standbys, passfiles: map[string]string{}, notReplayed: map[string]bool{}}
}

func (d *fakeDatabase) login(t credential.Target) error {
	if d.unreachable {
		return fmt.Errorf("fake: %w", credential.ErrUnreachable)
	}
	if t.Host == "" {
		return fmt.Errorf("fake: no host")
	}
	if p, ok := d.passwords[t.User]; !ok || (p != t.Password && !d.acceptAnyPassword) {
		return fmt.Errorf("fake: %w", credential.ErrAuthFailed)
	}
	return nil
}

func (d *fakeDatabase) EnsurePassword(_ context.Context, t credential.Target, role, password string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.login(t); err != nil {
		return false, err
	}
	if d.passwords[role] == password {
		return false, nil
	}
	if d.beforeSetPassword != nil {
		d.beforeSetPassword()
	}
	d.setCalls++
	if d.replaced == nil {
		d.replaced = map[string]string{}
	}
	d.replaced[role] = d.passwords[role]
	d.passwords[role] = password
	if d.setThenFail {
		return true, fmt.Errorf("fake: %w", credential.ErrUnreachable)
	}
	return true, nil
}

func (d *fakeDatabase) PasswordMatches(_ context.Context, t credential.Target, role, password string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.login(t); err != nil {
		return false, err
	}
	return d.passwords[role] == password || (d.oldPasswordStored && d.replaced[role] == password), nil
}

func (d *fakeDatabase) VerifyLogin(_ context.Context, t credential.Target, user, password string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t.User, t.Password = user, password
	err := d.login(t)
	if credential.Classify(err) == credential.ClassAuth {
		return false, nil
	}
	return err == nil, err
}

// StreamingStandbyNames names the first standbys pods (ordinals 1 up): the fake's
// standbys stream; a woken one is counted in wakes, and streams if streamOnWake.
func (d *fakeDatabase) StreamingStandbyNames(_ context.Context, t credential.Target) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.login(t); err != nil {
		return nil, err
	}
	var names []string
	for i := 1; i <= d.standbys; i++ {
		names = append(names, podName(dbName, int32(i)))
	}
	return names, nil
}

func (d *fakeDatabase) WakeStandby(_ context.Context, t credential.Target) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.standbyLogin(t); err != nil {
		return false, err
	}
	d.wakes = append(d.wakes, strings.TrimPrefix(t.Host, podIPPrefix))
	if d.streamOnWake {
		d.standbys++
	}
	return true, nil
}

// RepointStandby is the standby's agent: it takes only the role's current password (the
// standby has replayed it), writes the passfile and reconnects the WAL receiver.
func (d *fakeDatabase) RepointStandby(_ context.Context, t credential.Target, _ int, user, password string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !strings.HasPrefix(t.Host, podIPPrefix) {
		return false, fmt.Errorf("fake: %s is not a standby's address", t.Host)
	}
	if d.unreachable {
		return false, fmt.Errorf("fake: %w", credential.ErrUnreachable)
	}
	if d.passwords[user] != password || d.notReplayed[t.Host] {
		return false, &agent.AgentError{Status: http.StatusForbidden, Message: "not the credential of role " + user}
	}
	if d.passfiles[t.Host] == password {
		return false, nil
	}
	d.passfileWrites++
	d.reconnects++
	d.passfiles[t.Host] = password
	return true, nil
}

// standbyLogin logs in to a standby, which only pod IPs reach.
func (d *fakeDatabase) standbyLogin(t credential.Target) error {
	if !strings.HasPrefix(t.Host, podIPPrefix) {
		return fmt.Errorf("fake: %s is not a standby's address", t.Host)
	}
	return d.login(t)
}

func (d *fakeDatabase) passfile(pod string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passfiles[podIPPrefix+pod]
}

func (d *fakeDatabase) password(role string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passwords[role]
}
