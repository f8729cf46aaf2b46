// Package provisioner is the pgops provisioner's controller: it turns each Postgres into an
// auth Secret, a StatefulSet of PostgreSQL pods run by the pgops agent (pkg/agent) and
// Services, and reports the database's status. docs/architecture.md fixes the contracts
// (names, labels, pod environment, agent behaviour, pause handshake).
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/dbaddr"
	versioned "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	kubedblisters "github.com/pgops/pgops/pkg/generated/listers/kubedb/v1"
	"github.com/pgops/pgops/pkg/operator"
)

// ControllerName names the workqueue (for its metrics) and the event source.
const ControllerName = "pgops-provisioner"

// FieldManager is sent with every write the provisioner makes.
const FieldManager = "pgops-provisioner"

// Config holds the provisioner's settings. The zero value of each field selects the default
// noted on it.
type Config struct {
	// Images maps spec.version to an image. Defaults to DefaultImageMapper().
	Images *ImageMapper
	// AgentImage is the image the pods' init container installs the agent from: the
	// operator image of this release. Defaults to DefaultAgentImage.
	AgentImage string
	// HealthChecker checks that the primary accepts SQL logins. Defaults to an SQLHealthChecker
	// in ClusterIP mode with DefaultHealthCheckTimeout.
	HealthChecker HealthChecker
	// StatusPeriod is how often a Postgres is re-examined after a successful sync, to keep its
	// phase honest. Defaults to DefaultStatusPeriod.
	StatusPeriod time.Duration
	// Recorder records events. When nil, New starts a broadcaster to the API server.
	Recorder record.EventRecorder
}

// DefaultStatusPeriod is the default of Config.StatusPeriod.
const DefaultStatusPeriod = 15 * time.Second

// Controller reconciles Postgres objects.
type Controller struct {
	kubeClient  kubernetes.Interface
	pgopsClient versioned.Interface

	postgresLister    kubedblisters.PostgresLister
	statefulSetLister appslisters.StatefulSetLister
	serviceLister     corelisters.ServiceLister
	pdbLister         policylisters.PodDisruptionBudgetLister
	podLister         corelisters.PodLister
	secretLister      corelisters.SecretLister
	requestIndexer    cache.Indexer
	configMapLister   corelisters.ConfigMapLister
	cachesSynced      []cache.InformerSynced

	queue workqueue.TypedRateLimitingInterface[cache.ObjectName]
	// pauseQueue holds databases whose pause was asked and not answered yet (pausequeue.go).
	pauseQueue workqueue.TypedRateLimitingInterface[cache.ObjectName]
	// locks serialises the syncs of one database across both queues.
	locks keyedLocks
	// written holds the provisioner's latest writes of Postgres objects the cache has not
	// shown yet.
	written operator.OwnWrites[*kubedbv1.Postgres]
	// healthChecks holds each database's latest SQL check (healthcache.go).
	healthChecks healthCache
	recorder     record.EventRecorder

	images       *ImageMapper
	agentImage   string
	health       HealthChecker
	statusPeriod time.Duration
	now          func() time.Time
}

// New builds the controller and registers its event handlers on the informers, which should
// come from operator.NewOwnedKubeInformerFactory and operator.NewPgopsInformerFactory (the
// controller expects owned objects only in its caches). Start the factories after New so the
// informers it asks for are started.
func New(ctx context.Context, kubeClient kubernetes.Interface, pgopsClient versioned.Interface,
	kubeInformers informers.SharedInformerFactory, pgopsInformers pgopsinformers.SharedInformerFactory,
	cfg Config) (*Controller, error) {
	logger := klog.FromContext(ctx)

	pgInformer := pgopsInformers.Kubedb().V1().Postgreses()
	requestInformer := pgopsInformers.Ops().V1alpha1().PostgresOpsRequests()
	if err := requestInformer.Informer().AddIndexers(cache.Indexers{requestsByDatabase: indexRequestByDatabase}); err != nil {
		return nil, fmt.Errorf("adding request index: %w", err)
	}
	stsInformer := kubeInformers.Apps().V1().StatefulSets()
	svcInformer := kubeInformers.Core().V1().Services()
	podInformer := kubeInformers.Core().V1().Pods()
	secretInformer := kubeInformers.Core().V1().Secrets()
	cmInformer := kubeInformers.Core().V1().ConfigMaps()
	pdbInformer := kubeInformers.Policy().V1().PodDisruptionBudgets()

	recorder := cfg.Recorder
	if recorder == nil {
		recorder = operator.NewEventRecorder(ctx, kubeClient, ControllerName)
	}
	images := cfg.Images
	if images == nil {
		images = DefaultImageMapper()
	}
	agentImage := cfg.AgentImage
	if agentImage == "" {
		agentImage = DefaultAgentImage
	}
	health := cfg.HealthChecker
	if health == nil {
		health = &SQLHealthChecker{HostMode: dbaddr.ModeClusterIP, Timeout: DefaultHealthCheckTimeout}
	}
	period := cfg.StatusPeriod
	if period <= 0 {
		period = DefaultStatusPeriod
	}

	c := &Controller{
		kubeClient:        kubeClient,
		pgopsClient:       pgopsClient,
		postgresLister:    pgInformer.Lister(),
		statefulSetLister: stsInformer.Lister(),
		serviceLister:     svcInformer.Lister(),
		pdbLister:         pdbInformer.Lister(),
		podLister:         podInformer.Lister(),
		secretLister:      secretInformer.Lister(),
		requestIndexer:    requestInformer.Informer().GetIndexer(),
		configMapLister:   cmInformer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: ControllerName}),
		pauseQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: ControllerName + "-pause"}),
		recorder:     recorder,
		images:       images,
		agentImage:   agentImage,
		health:       health,
		statusPeriod: period,
		now:          time.Now,
	}

	logger.Info("Setting up event handlers")
	if _, err := pgInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueuePostgres,
		UpdateFunc: func(_, newObj interface{}) { c.enqueuePostgres(newObj) },
		DeleteFunc: c.enqueuePostgres,
	}); err != nil {
		return nil, fmt.Errorf("adding Postgres event handler: %w", err)
	}
	owned := cache.ResourceEventHandlerFuncs{
		AddFunc: c.handleObject,
		UpdateFunc: func(oldObj, newObj interface{}) {
			o, n := oldObj.(metav1.Object), newObj.(metav1.Object)
			if o.GetResourceVersion() == n.GetResourceVersion() {
				return // periodic resync; the Postgres has its own
			}
			c.handleObject(newObj)
		},
		DeleteFunc: c.handleObject,
	}
	c.cachesSynced = append(c.cachesSynced, pgInformer.Informer().HasSynced)
	// An ops request ending, or being created or deleted, can change what the provisioner
	// does about rotations of its database.
	// A request's progress (its conditions) changes nothing here: only its phase, its
	// deletion and its finalizer do. Each sync logs in to the database, so waking it for
	// every status write of a request would cost a login each.
	// A request asking for its database's pause goes onto the pause queue only.
	if _, err := requestInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			c.enqueueRequestDatabase(obj)
			c.enqueuePauseAsk(obj)
		},
		UpdateFunc: func(oldObj, newObj interface{}) {
			if operator.RequestStageChanged(oldObj, newObj) {
				c.enqueueRequestDatabase(newObj)
			}
			c.enqueuePauseAsk(newObj)
		},
		DeleteFunc: c.enqueueRequestDatabase,
	}); err != nil {
		return nil, fmt.Errorf("adding PostgresOpsRequest event handler: %w", err)
	}
	c.cachesSynced = append(c.cachesSynced, requestInformer.Informer().HasSynced)
	for _, inf := range []cache.SharedIndexInformer{stsInformer.Informer(), svcInformer.Informer(),
		podInformer.Informer(), secretInformer.Informer(), cmInformer.Informer(), pdbInformer.Informer()} {
		if _, err := inf.AddEventHandler(owned); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
		c.cachesSynced = append(c.cachesSynced, inf.HasSynced)
	}
	return c, nil
}

// HasSynced reports whether all the controller's informers have synced.
func (c *Controller) HasSynced() bool {
	for _, s := range c.cachesSynced {
		if !s() {
			return false
		}
	}
	return true
}

func (c *Controller) enqueuePostgres(obj interface{}) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	name, err := cache.ObjectToName(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(name)
	if pg, ok := obj.(*kubedbv1.Postgres); ok && pauseAsked(pg) {
		c.pauseQueue.Add(name)
	}
}

// enqueueRequestDatabase enqueues the Postgres an ops request is for.
func (c *Controller) enqueueRequestDatabase(obj interface{}) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if r, ok := obj.(*opsv1alpha1.PostgresOpsRequest); ok {
		c.queue.Add(cache.ObjectName{Namespace: r.Namespace, Name: r.Spec.DatabaseRef.Name})
	}
}

// enqueuePauseAsk puts the database of a request that asks for its pause onto the pause
// queue.
func (c *Controller) enqueuePauseAsk(obj interface{}) {
	if r, ok := obj.(*opsv1alpha1.PostgresOpsRequest); ok && r.AsksForPause() {
		c.pauseQueue.Add(cache.ObjectName{Namespace: r.Namespace, Name: r.Spec.DatabaseRef.Name})
	}
}

// handleObject enqueues the Postgres that owns obj: directly through its controller owner
// reference, or for pods through their StatefulSet.
func (c *Controller) handleObject(obj interface{}) {
	object, ok := obj.(metav1.Object)
	if !ok {
		tombstone, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			utilruntime.HandleError(fmt.Errorf("decoding object: unexpected type %T", obj))
			return
		}
		if object, ok = tombstone.Obj.(metav1.Object); !ok {
			utilruntime.HandleError(fmt.Errorf("decoding tombstone: unexpected type %T", tombstone.Obj))
			return
		}
	}
	owner := metav1.GetControllerOf(object)
	ns := object.GetNamespace()
	if owner == nil {
		// The generated auth Secret has no owner reference (secret.go): its labels name
		// its database.
		if l := object.GetLabels(); l[LabelName] == NameValue && l[LabelInstance] != "" {
			c.queue.Add(cache.ObjectName{Namespace: ns, Name: l[LabelInstance]})
		}
		return
	}
	if owner.Kind == "StatefulSet" {
		sts, err := c.statefulSetLister.StatefulSets(ns).Get(owner.Name)
		if err != nil {
			return
		}
		if owner = metav1.GetControllerOf(sts); owner == nil {
			return
		}
	}
	if owner.Kind != kubedbv1.ResourceKindPostgres {
		return
	}
	pg, err := c.postgresLister.Postgreses(ns).Get(owner.Name)
	if err != nil || pg.UID != owner.UID {
		return
	}
	c.queue.Add(cache.ObjectName{Namespace: ns, Name: pg.Name})
}

// Run waits for the caches, then runs workers until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	defer c.pauseQueue.ShutDown()
	logger := klog.FromContext(ctx)

	logger.Info("Starting controller", "controller", ControllerName)
	if ok := cache.WaitForCacheSync(ctx.Done(), c.cachesSynced...); !ok {
		return errors.New("failed to wait for caches to sync")
	}
	logger.Info("Starting workers", "count", workers, "pauseWorkers", PauseWorkers)
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, c.runWorker, time.Second)
	}
	for i := 0; i < PauseWorkers; i++ {
		go wait.UntilWithContext(ctx, c.runPauseWorker, time.Second)
	}
	<-ctx.Done()
	logger.Info("Shutting down workers")
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for processNext(ctx, c.queue, c.syncHandler) {
	}
}

// processNext takes one database off queue and runs sync on it, retrying with backoff on an
// error; false once the queue is shut down. Both queues' workers use it.
func processNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[cache.ObjectName],
	sync func(context.Context, cache.ObjectName) error) bool {
	name, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(name)

	logger := klog.LoggerWithValues(klog.FromContext(ctx), "postgres", name.String())
	ctx = klog.NewContext(ctx, logger)
	if err := sync(ctx, name); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Error syncing; requeuing for later retry", "postgres", name.String())
		queue.AddRateLimited(name)
		return true
	}
	queue.Forget(name)
	return true
}
