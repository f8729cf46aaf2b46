package operator

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	versioned "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
)

// StripManagedFields is an informer transform that drops managedFields, which the
// operators never read, so the caches hold less.
func StripManagedFields(obj interface{}) (interface{}, error) {
	if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return obj, nil
	}
	if accessor, err := meta.Accessor(obj); err == nil {
		accessor.SetManagedFields(nil)
	}
	return obj, nil
}

// NewOwnedKubeInformerFactory returns the Kubernetes informer factory both operators use for
// the objects they own (Secrets, StatefulSets, Services, Pods, ConfigMaps): limited to
// opts' namespace, to objects labelled kubedbv1.ManagedBySelector, and without
// managedFields, so the caches never hold every Secret or Pod of a cluster. Read an
// unlabelled object (a user's Secret) with a direct GET.
func NewOwnedKubeInformerFactory(client kubernetes.Interface, opts *Options) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, opts.ResyncPeriod,
		informers.WithNamespace(opts.InformerNamespace()),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = kubedbv1.ManagedBySelector }),
		informers.WithTransform(StripManagedFields))
}

// NewPgopsInformerFactory returns the informer factory for pgops's own kinds (Postgres,
// PostgresOpsRequest): limited to opts' namespace and without managedFields.
func NewPgopsInformerFactory(client versioned.Interface, opts *Options) pgopsinformers.SharedInformerFactory {
	return pgopsinformers.NewSharedInformerFactoryWithOptions(client, opts.ResyncPeriod,
		pgopsinformers.WithNamespace(opts.InformerNamespace()),
		pgopsinformers.WithTransform(StripManagedFields))
}
