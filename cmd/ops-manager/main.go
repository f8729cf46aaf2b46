// Command ops-manager runs the pgops ops-manager: it carries out PostgresOpsRequests,
// such as RotateAuth, as crash-safe state machines.
package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/credential"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsscheme "github.com/pgops/pgops/pkg/generated/clientset/versioned/scheme"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	"github.com/pgops/pgops/pkg/operator"
)

var (
	hostMode       = flag.String("database-host-mode", string(opsmanager.HostModeClusterIP), "How to reach a database's primary Service: ClusterIP (its cluster IP; works in the cluster and on nodes) or DNS (<service>.<namespace>.svc; needs cluster DNS).")
	sslMode        = flag.String("database-sslmode", "prefer", "libpq sslmode for connections to databases: disable, allow, prefer, require, verify-ca or verify-full.")
	connectTimeout = flag.Duration("database-connect-timeout", 10*time.Second, "Timeout for each connection to a database.")
	passwordLength = flag.Int("password-length", credential.DefaultPasswordLength, "Length of generated passwords.")
)

func main() { operator.Main(opsmanager.ControllerName, run) }

func run(ctx context.Context, cfg *rest.Config, opts *operator.Options, health *operator.Health) error {
	mode, err := opsmanager.ParseHostMode(*hostMode)
	if err != nil {
		return err
	}
	kubeClient, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	pgopsClient, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating pgops client: %w", err)
	}
	// Only the objects the operators own are cached: never every Secret or Pod.
	kubeInformers := informers.NewSharedInformerFactoryWithOptions(kubeClient, opts.ResyncPeriod,
		informers.WithNamespace(opts.InformerNamespace()),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = kubedbv1.ManagedBySelector }),
		informers.WithTransform(operator.StripManagedFields))
	pgopsInformers := pgopsinformers.NewSharedInformerFactoryWithOptions(pgopsClient, opts.ResyncPeriod,
		pgopsinformers.WithNamespace(opts.InformerNamespace()),
		pgopsinformers.WithTransform(operator.StripManagedFields))

	utilruntime.Must(pgopsscheme.AddToScheme(scheme.Scheme))
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kubeClient.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: opsmanager.ControllerName})

	controller, err := opsmanager.New(kubeClient, pgopsClient, kubeInformers, pgopsInformers, recorder,
		opsmanager.PostgreSQL{}, opsmanager.Config{
			HostMode: mode, PasswordLength: *passwordLength, SSLMode: *sslMode, ConnectTimeout: *connectTimeout,
		})
	if err != nil {
		return err
	}
	kubeInformers.Start(ctx.Done())
	pgopsInformers.Start(ctx.Done())
	defer kubeInformers.Shutdown()
	defer pgopsInformers.Shutdown()
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), controller.HasSynced) {
			health.SetReady()
		}
	}()
	return controller.Run(ctx, opts.Workers)
}
