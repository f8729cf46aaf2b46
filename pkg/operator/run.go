package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// Health is what the probes report. Liveness holds while the process serves (and, for a
// leader, while it can renew its Lease). Readiness holds once the operator's caches are
// synced, and for a standby replica that waits for the Lease: it is ready to take over, and
// a Deployment's rollout must not wait for it to lead.
type Health struct {
	ready   atomic.Bool
	standby atomic.Bool
	elector atomic.Pointer[leaderelection.LeaderElector]
}

// SetReady marks the operator ready; call it after the informer caches have synced.
func (h *Health) SetReady() { h.ready.Store(true) }

func (h *Health) healthz(w http.ResponseWriter, r *http.Request) {
	// A leader that can no longer renew its Lease must be restarted, or two operators could
	// act on the same database.
	if le := h.elector.Load(); le != nil {
		if err := le.Check(2 * time.Second); err != nil {
			http.Error(w, "leader election: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	_, _ = w.Write([]byte("ok"))
}

func (h *Health) readyz(w http.ResponseWriter, r *http.Request) {
	if h.standby.Load() {
		_, _ = w.Write([]byte("ok: standby, waiting for the leader election lease"))
		return
	}
	if !h.ready.Load() {
		http.Error(w, "caches not synced yet", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// RunFunc starts an operator's informers and controllers and blocks until ctx is done.
type RunFunc func(ctx context.Context, cfg *rest.Config, opts *Options, health *Health) error

// Run serves the health probes and calls run, behind leader election when it is on. It
// returns when ctx is cancelled (SIGTERM) and run has returned, or on the first error.
func Run(ctx context.Context, o *Options, run RunFunc) error {
	if err := o.Validate(); err != nil {
		return err
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	health := &Health{}
	if o.HealthAddr != "" {
		stop, err := serve("health probes", o.HealthAddr, health.handler())
		if err != nil {
			return err
		}
		defer stop()
	}
	if o.MetricsAddr != "" {
		stop, err := serve("metrics", o.MetricsAddr, metricsHandler())
		if err != nil {
			return err
		}
		defer stop()
	}
	if !o.LeaderElect {
		return run(ctx, cfg, o, health)
	}
	return runAsLeader(ctx, o, cfg, health, run)
}

func (h *Health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.healthz)
	mux.HandleFunc("/readyz", h.readyz)
	return mux
}

func metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	return mux
}

// serve answers on addr until stop is called; what names the server in errors and logs.
func serve(what, addr string, handler http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for %s on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Server stopped", "serving", what)
		}
	}()
	klog.InfoS("Serving "+what, "address", ln.Addr().String())
	return func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}, nil
}

func runAsLeader(ctx context.Context, o *Options, cfg *rest.Config, health *Health, run RunFunc) error {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(protobufConfig(cfg), o.Name+"-leader-election"))
	if err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	identity := hostname + "_" + string(uuid.NewUUID())
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.leaseNamespace(), o.LeaderElectionID,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: identity})
	if err != nil {
		return fmt.Errorf("creating leader election lock: %w", err)
	}

	var (
		runErr  error
		started atomic.Bool
		runDone = make(chan struct{})
	)
	// The election ends when run returns, even with an error (a flag only run checks, say):
	// client-go would otherwise keep renewing the Lease for a leader that does nothing, and
	// the standby would never take over.
	electCtx, endElection := context.WithCancel(ctx)
	defer endElection()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaseDuration,
		RenewDeadline:   o.RenewDeadline,
		RetryPeriod:     o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) {
				started.Store(true)
				health.standby.Store(false)
				defer close(runDone)
				defer endElection()
				klog.InfoS("Became leader", "lease", o.LeaderElectionID, "identity", identity)
				runErr = run(leadCtx, cfg, o, health)
			},
			OnStoppedLeading: func() {
				klog.InfoS("Stopped leading", "lease", o.LeaderElectionID, "identity", identity)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("configuring leader election: %w", err)
	}
	health.elector.Store(elector)
	health.standby.Store(true)
	elector.Run(electCtx)

	// Run returns when ctx is done or leadership is lost. Wait for the controllers to
	// finish their current items before reporting why. (If ctx was cancelled just as the
	// Lease was acquired, run may not have started; its context is already done then.)
	if !started.Load() {
		return nil
	}
	<-runDone
	if runErr != nil {
		return runErr
	}
	if ctx.Err() == nil {
		return fmt.Errorf("lost leadership of lease %q", o.LeaderElectionID)
	}
	return nil
}
