package operator

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
)

// NewClients returns the Kubernetes and pgops clientsets both operators talk through.
//
// Built-in types travel as protobuf, as kube-controller-manager's do: they are smaller and
// cheaper to encode and decode on both ends, and the API server's watch cache serialises an
// event once for all protobuf watchers instead of once more for a JSON one. Custom resources
// have no protobuf form, so the pgops clientset stays on JSON.
func NewClients(cfg *rest.Config) (kubernetes.Interface, pgopsclient.Interface, error) {
	kubeClient, err := kubernetes.NewForConfig(protobufConfig(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	pgopsClient, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating pgops client: %w", err)
	}
	return kubeClient, pgopsClient, nil
}

// protobufConfig is a copy of cfg for clients of built-in types only, speaking protobuf.
func protobufConfig(cfg *rest.Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.ContentType = runtime.ContentTypeProtobuf
	out.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return out
}
