package operator

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
)

// NewClients returns the Kubernetes and pgops clientsets both operators talk through.
func NewClients(cfg *rest.Config) (kubernetes.Interface, pgopsclient.Interface, error) {
	kubeClient, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	pgopsClient, err := pgopsclient.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating pgops client: %w", err)
	}
	return kubeClient, pgopsClient, nil
}
