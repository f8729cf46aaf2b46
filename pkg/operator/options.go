// Package operator holds what both pgops operators share around their controllers: command
// line options, the connection to the API server, health probes and leader election.
package operator

import (
	"flag"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options are the flags every pgops operator takes.
type Options struct {
	// Name identifies the operator in leases, events and logs, e.g. "pgops-provisioner".
	Name string

	Kubeconfig string
	MasterURL  string
	// Namespace limits the watch to one namespace; empty means all namespaces.
	Namespace string
	Workers   int
	// ResyncPeriod is how often informers replay their cache to the handlers.
	ResyncPeriod time.Duration

	// HealthAddr serves /healthz and /readyz; empty disables them.
	HealthAddr string
	// MetricsAddr serves Prometheus /metrics; empty disables it. It is a port of its own
	// so a metrics Service and a NetworkPolicy can expose it without the probes.
	MetricsAddr string

	LeaderElect         bool
	LeaderElectionID    string
	LeaderElectionNS    string
	LeaseDuration       time.Duration
	RenewDeadline       time.Duration
	RetryPeriod         time.Duration
	ShutdownGracePeriod time.Duration
	ClientQPS           float64
	ClientBurst         int
}

// NewOptions returns the defaults for the operator called name.
func NewOptions(name string) *Options {
	return &Options{
		Name:                name,
		Workers:             32,
		ResyncPeriod:        10 * time.Minute,
		HealthAddr:          ":8081",
		MetricsAddr:         ":8080",
		LeaderElect:         true,
		LeaderElectionID:    name,
		LeaseDuration:       15 * time.Second,
		RenewDeadline:       10 * time.Second,
		RetryPeriod:         2 * time.Second,
		ShutdownGracePeriod: 30 * time.Second,
		ClientQPS:           200,
		ClientBurst:         400,
	}
}

// AddFlags registers the options on fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path to a kubeconfig. Only required if out-of-cluster.")
	fs.StringVar(&o.MasterURL, "master", o.MasterURL, "The address of the Kubernetes API server. Overrides any value in kubeconfig. Only required if out-of-cluster.")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "Watch only this namespace. Empty watches all namespaces.")
	fs.IntVar(&o.Workers, "workers", o.Workers, "Number of objects processed in parallel. Syncs mostly wait on the network (API server, PostgreSQL), so several per core keep one slow database from delaying the others.")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", o.ResyncPeriod, "How often informers replay their cache, so drift is corrected even without events.")
	fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "Address serving the probes /healthz and /readyz. Empty disables them.")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Address serving Prometheus /metrics. Empty disables it.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Run only while holding a Lease, so several replicas can run with one active.")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", o.LeaderElectionID, "Name of the Lease used for leader election.")
	fs.StringVar(&o.LeaderElectionNS, "leader-election-namespace", o.LeaderElectionNS, "Namespace of the Lease. Defaults to the pod's namespace, else --namespace, else 'default'.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "How long a non-leader waits before taking over an expired Lease.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "How long the leader retries renewing before giving up leadership.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "How often candidates try to acquire or renew the Lease.")
	fs.DurationVar(&o.ShutdownGracePeriod, "shutdown-grace-period", o.ShutdownGracePeriod, "How long workers may finish their current item after SIGTERM.")
	fs.Float64Var(&o.ClientQPS, "kube-api-qps", o.ClientQPS, "Sustained queries per second to the API server.")
	fs.IntVar(&o.ClientBurst, "kube-api-burst", o.ClientBurst, "Burst of queries to the API server.")
}

// Validate reports flag values that cannot work.
func (o *Options) Validate() error {
	if o.Workers < 1 {
		return fmt.Errorf("--workers must be at least 1, got %d", o.Workers)
	}
	if o.LeaderElect && o.LeaderElectionID == "" {
		return fmt.Errorf("--leader-election-id must not be empty when --leader-elect is on")
	}
	if o.LeaderElect && !(o.LeaseDuration > o.RenewDeadline && o.RenewDeadline > o.RetryPeriod) {
		return fmt.Errorf("leader election needs lease-duration > renew-deadline > retry-period")
	}
	return nil
}

// RESTConfig builds the API server connection: in-cluster when no kubeconfig or master is
// given, else from them.
func (o *Options) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags(o.MasterURL, o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("building API server config: %w", err)
	}
	cfg.QPS = float32(o.ClientQPS)
	cfg.Burst = o.ClientBurst
	cfg.UserAgent = o.Name
	return cfg, nil
}

// InformerNamespace is the namespace argument for informer factories: "" watches all.
func (o *Options) InformerNamespace() string {
	if o.Namespace == "" {
		return metav1.NamespaceAll
	}
	return o.Namespace
}

// leaseNamespace picks where the leader-election Lease lives.
func (o *Options) leaseNamespace() string {
	if o.LeaderElectionNS != "" {
		return o.LeaderElectionNS
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(data) > 0 {
		return string(data)
	}
	if o.Namespace != "" {
		return o.Namespace
	}
	return metav1.NamespaceDefault
}
