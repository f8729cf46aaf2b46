// Package opsmanager is the ops-manager's controller: it carries out PostgresOpsRequests.
// The only operation so far is RotateAuth, a state machine whose progress lives in the
// request's status (phase and conditions), so a restarted operator or a new leader resumes
// where the last one stopped. The step table is in steps.go.
package opsmanager

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/dbaddr"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	kubedblisters "github.com/pgops/pgops/pkg/generated/listers/kubedb/v1"
	opslisters "github.com/pgops/pgops/pkg/generated/listers/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/operator"
)

const (
	// ControllerName names the workqueue (and so its metrics) and the event source.
	ControllerName = "pgops-ops-manager"
	// FieldManager is recorded on every write the ops-manager makes.
	FieldManager = "pgops-ops-manager"
	// Finalizer keeps a request until the ops-manager has resumed its database and made
	// sure the database's Secret logs in, even when the request is deleted mid-way.
	Finalizer = "ops.kubedb.com/finalizer"
	// DefaultStepTimeout bounds each step when spec.timeout is unset.
	DefaultStepTimeout = 10 * time.Minute

	byDatabaseIndex = "byDatabase"
)

// Config holds the ops-manager's settings.
type Config struct {
	// HostMode says how to reach a database's primary Service.
	HostMode dbaddr.Mode
	// PasswordLength is the length of generated passwords.
	PasswordLength int
	// SSLMode is the libpq sslmode used to reach databases.
	SSLMode string
	// ConnectTimeout bounds each connection to a database.
	ConnectTimeout time.Duration
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock
}

// Controller carries out PostgresOpsRequests.
type Controller struct {
	kubeClient  kubernetes.Interface
	pgopsClient pgopsclient.Interface

	requests        opslisters.PostgresOpsRequestLister
	requestsIndexer cache.Indexer
	postgreses      kubedblisters.PostgresLister
	statefulSets    appslisters.StatefulSetLister
	pods            corelisters.PodLister
	services        corelisters.ServiceLister
	synced          []cache.InformerSynced

	queue    workqueue.TypedRateLimitingInterface[cache.ObjectName]
	recorder record.EventRecorder
	db       Database
	cfg      Config
	clock    clock.PassiveClock
	// written holds the ops-manager's latest writes of requests the cache has not shown yet.
	written operator.OwnWrites[*opsv1alpha1.PostgresOpsRequest]
	// unwritten holds status a sync kept back while it awaits an answer (unwritten.go).
	unwritten unwrittenStatus
	// templates holds the StatefulSet generation each request wrote or read live with its
	// template (statefulset.go).
	templates writtenTemplates
	// wakes counts the standbys each request woke (wake.go).
	wakes standbyWakes
}

// New wires the controller to its informers. kubeInformers must be filtered to the
// objects the operators own (kubedbv1.ManagedBySelector): the ops-manager never caches
// other Pods. It caches no Secrets at all: it reads the few it needs with GETs, so it needs
// no right to list or watch Secrets.
func New(kubeClient kubernetes.Interface, pgopsClient pgopsclient.Interface,
	kubeInformers kubeinformers.SharedInformerFactory, pgopsInformers pgopsinformers.SharedInformerFactory,
	recorder record.EventRecorder, db Database, cfg Config) (*Controller, error) {
	if cfg.HostMode == "" {
		cfg.HostMode = dbaddr.ModeClusterIP
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	requestInformer := pgopsInformers.Ops().V1alpha1().PostgresOpsRequests()
	postgresInformer := pgopsInformers.Kubedb().V1().Postgreses()
	stsInformer := kubeInformers.Apps().V1().StatefulSets()
	podInformer := kubeInformers.Core().V1().Pods()
	serviceInformer := kubeInformers.Core().V1().Services()

	if err := requestInformer.Informer().AddIndexers(cache.Indexers{byDatabaseIndex: indexByDatabase}); err != nil {
		return nil, fmt.Errorf("adding request index: %w", err)
	}

	c := &Controller{
		kubeClient:      kubeClient,
		pgopsClient:     pgopsClient,
		requests:        requestInformer.Lister(),
		requestsIndexer: requestInformer.Informer().GetIndexer(),
		postgreses:      postgresInformer.Lister(),
		statefulSets:    stsInformer.Lister(),
		pods:            podInformer.Lister(),
		services:        serviceInformer.Lister(),
		synced: []cache.InformerSynced{
			requestInformer.Informer().HasSynced, postgresInformer.Informer().HasSynced,
			stsInformer.Informer().HasSynced, podInformer.Informer().HasSynced,
			serviceInformer.Informer().HasSynced,
		},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: ControllerName},
		),
		recorder: recorder,
		db:       db,
		cfg:      cfg,
		clock:    cfg.Clock,
	}

	if _, err := requestInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { c.handleRequest(obj, true) },
		UpdateFunc: func(old, obj interface{}) { c.handleRequest(obj, operator.RequestStageChanged(old, obj)) },
		DeleteFunc: c.handleRequestDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := postgresInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.handlePostgres,
		UpdateFunc: func(_, obj interface{}) { c.handlePostgres(obj) },
		DeleteFunc: c.handlePostgres,
	}); err != nil {
		return nil, err
	}
	for _, informer := range []cache.SharedIndexInformer{stsInformer.Informer(), podInformer.Informer(), serviceInformer.Informer()} {
		if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.handleOwnedObject,
			UpdateFunc: func(_, obj interface{}) { c.handleOwnedObject(obj) },
			DeleteFunc: c.handleOwnedObject,
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// indexByDatabase indexes requests by "<namespace>/<database>".
func indexByDatabase(obj interface{}) ([]string, error) {
	req, ok := obj.(*opsv1alpha1.PostgresOpsRequest)
	if !ok {
		return nil, nil
	}
	return []string{req.Namespace + "/" + req.Spec.DatabaseRef.Name}, nil
}

// requestsFor lists the requests that target the database namespace/name.
func (c *Controller) requestsFor(namespace, name string) []*opsv1alpha1.PostgresOpsRequest {
	objs, err := c.requestsIndexer.ByIndex(byDatabaseIndex, namespace+"/"+name)
	if err != nil {
		utilruntime.HandleError(err)
		return nil
	}
	out := make([]*opsv1alpha1.PostgresOpsRequest, 0, len(objs))
	for _, obj := range objs {
		out = append(out, obj.(*opsv1alpha1.PostgresOpsRequest))
	}
	return out
}

func (c *Controller) enqueue(obj interface{}) {
	name, err := cache.ObjectToName(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(name)
}

// handleRequest enqueues the request, and when wakeSiblings says it may have changed what
// the others for its database wait for, those of them that have not ended: queued requests
// start when it releases the database, and an older Pending one is superseded by a new one.
// Ended requests cost nothing per event, and a running request's progress does not wake
// the others.
func (c *Controller) handleRequest(obj interface{}, wakeSiblings bool) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	req, ok := obj.(*opsv1alpha1.PostgresOpsRequest)
	if !ok {
		return
	}
	c.enqueue(req)
	if !wakeSiblings {
		return
	}
	for _, sibling := range c.requestsFor(req.Namespace, req.Spec.DatabaseRef.Name) {
		if sibling.UID != req.UID && !sibling.Status.Phase.Ended() {
			c.enqueue(sibling)
		}
	}
}

// handleRequestDeleted forgets what is remembered in memory of a deleted request (its
// cleanup forgets it too, but a request released by hand never gets one), and wakes its
// siblings.
func (c *Controller) handleRequestDeleted(obj interface{}) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	if req, ok := obj.(*opsv1alpha1.PostgresOpsRequest); ok {
		c.forget(req.UID)
	}
	c.handleRequest(obj, true)
}

// forget drops what the controller remembers in memory of request uid.
func (c *Controller) forget(uid types.UID) {
	c.templates.forget(uid)
	c.wakes.forget(uid)
}

// handlePostgres wakes the requests that wait on the database.
func (c *Controller) handlePostgres(obj interface{}) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	pg, ok := obj.(*kubedbv1.Postgres)
	if !ok {
		return
	}
	c.enqueueActiveRequestsFor(pg.Namespace, pg.Name)
}

// handleOwnedObject maps a StatefulSet, Pod or Service of a database to the requests
// that wait on it, through KubeDB's instance label.
func (c *Controller) handleOwnedObject(obj interface{}) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	var namespace string
	var labels map[string]string
	switch o := obj.(type) {
	case *corev1.Pod:
		namespace, labels = o.Namespace, o.Labels
	case *corev1.Service:
		namespace, labels = o.Namespace, o.Labels
	default:
		accessor, ok := obj.(interface {
			GetNamespace() string
			GetLabels() map[string]string
		})
		if !ok {
			return
		}
		namespace, labels = accessor.GetNamespace(), accessor.GetLabels()
	}
	if labels[kubedbv1.LabelName] != kubedbv1.NameValue || labels[kubedbv1.LabelInstance] == "" {
		return
	}
	c.enqueueActiveRequestsFor(namespace, labels[kubedbv1.LabelInstance])
}

func (c *Controller) enqueueActiveRequestsFor(namespace, database string) {
	for _, req := range c.requestsFor(namespace, database) {
		// An ended request still holding the finalizer may be finishing restarts in
		// cleanup; one without it costs nothing per event.
		if !req.Status.Phase.Ended() || req.DeletionTimestamp != nil || hasFinalizer(req) {
			c.enqueue(req)
		}
	}
}

// HasSynced tells whether every informer the controller reads has synced.
func (c *Controller) HasSynced() bool {
	for _, synced := range c.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// Run starts workers and blocks until ctx is done, then waits for them to finish their
// current item.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting controller", "controller", ControllerName)
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("failed to wait for caches to sync")
	}
	done := make(chan struct{}, workers)
	for i := 0; i < workers; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			wait.UntilWithContext(ctx, c.runWorker, time.Second)
		}()
	}
	logger.Info("Started workers", "count", workers)
	<-ctx.Done()
	c.queue.ShutDown()
	for i := 0; i < workers; i++ {
		<-done
	}
	logger.Info("Shut down workers")
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextWorkItem(ctx) {
	}
}

func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "opsRequest", key.String())
	result, err := c.syncHandler(klog.NewContext(ctx, logger), key)
	switch {
	case err != nil:
		logger.Error(err, "Sync failed; will retry")
		c.queue.AddRateLimited(key)
		if result.requeueAfter > 0 {
			// The backoff grows to many minutes; a step's deadline must not wait for it.
			c.queue.AddAfter(key, result.requeueAfter)
		}
	case result.requeueAfter > 0:
		c.queue.Forget(key)
		c.queue.AddAfter(key, result.requeueAfter)
	default:
		c.queue.Forget(key)
	}
	return true
}
