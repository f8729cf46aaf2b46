// Command ops-manager runs the pgops ops-manager: it carries out PostgresOpsRequests,
// such as RotateAuth, as crash-safe state machines.
package main

import (
	"context"
	"fmt"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	"github.com/pgops/pgops/pkg/operator"
)

func main() { operator.Main("pgops-ops-manager", run) }

func run(ctx context.Context, cfg *rest.Config, opts *operator.Options, health *operator.Health) error {
	kubeClient, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	pgopsClient, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating pgops client: %w", err)
	}
	kubeInformers := informers.NewSharedInformerFactoryWithOptions(kubeClient, opts.ResyncPeriod,
		informers.WithNamespace(opts.InformerNamespace()))
	pgopsInformers := pgopsinformers.NewSharedInformerFactoryWithOptions(pgopsClient, opts.ResyncPeriod,
		pgopsinformers.WithNamespace(opts.InformerNamespace()))

	synced := []cache.InformerSynced{
		pgopsInformers.Ops().V1alpha1().PostgresOpsRequests().Informer().HasSynced,
		pgopsInformers.Kubedb().V1().Postgreses().Informer().HasSynced,
		kubeInformers.Apps().V1().StatefulSets().Informer().HasSynced,
	}
	kubeInformers.Start(ctx.Done())
	pgopsInformers.Start(ctx.Done())
	defer kubeInformers.Shutdown()
	defer pgopsInformers.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("informer caches did not sync")
	}
	health.SetReady()
	klog.InfoS("Caches synced; waiting for work")
	<-ctx.Done()
	return nil
}
