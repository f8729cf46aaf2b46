package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Run is the agent's life as PID 1 of the database container: it answers probes at
// probeAddr from the start, prepares the data directory, runs postgres until it exits and
// returns the exit code the container should end with. A stop signal while the data
// directory is prepared ends the preparation (it is safe to repeat at the next start).
func Run(ctx context.Context, cfg *Config, probeAddr string) (int, error) {
	// The password is in the agent's initial environment, /proc/1/environ, which the server
	// (the same uid) could read for a role with pg_read_server_files: a process that is not
	// dumpable has its /proc files owned by root. postgres, exec'd, is dumpable again.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return 1, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", errno)
	}
	signals := make(chan os.Signal, len(forwardedSignals))
	signal.Notify(signals, forwardedSignals...)
	defer signal.Stop(signals)

	h, err := newHealth(cfg)
	if err != nil {
		return 1, err
	}
	ln, err := net.Listen("tcp", probeAddr)
	if err != nil {
		return 1, fmt.Errorf("listening for probes: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", h.handler())
	mux.Handle("PUT "+StandbyPassfilePath, newRepointer(cfg, h.db))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Serving probes")
		}
	}()
	defer srv.Close()

	stopSignal, err := prepareUntilStopped(ctx, cfg, signals)
	if stopSignal != nil {
		klog.InfoS("Stopped before postgres started", "signal", stopSignal.String())
		return 128 + int(stopSignal.(syscall.Signal)), nil
	}
	if err != nil {
		return 1, err
	}

	role := "standby"
	if cfg.IsPrimary() {
		role = "primary"
	}
	code, err := supervise(cfg, signals, func(pid int) {
		h.setPostmaster(pid)
		h.setPhase(running)
		klog.InfoS("Started postgres", "role", role, "address", net.JoinHostPort(cfg.PodIP, fmt.Sprint(cfg.Port)), "pid", pid)
	}, h.stop)
	h.setPhase(stopped)
	h.stop()
	if err != nil {
		return 1, err
	}
	klog.InfoS("Postgres exited", "code", code)
	return code, nil
}

// prepareUntilStopped prepares the data directory, ending early on a stop signal, which it
// returns.
func prepareUntilStopped(ctx context.Context, cfg *Config, signals <-chan os.Signal) (os.Signal, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &preparer{cfg: cfg, run: runProgram, waitPrimary: func(ctx context.Context) error { return waitForPrimary(ctx, cfg) }}
	done := make(chan error, 1)
	go func() { done <- p.prepare(ctx) }()
	for {
		select {
		case err := <-done:
			return nil, err
		case sig := <-signals:
			if !isStopSignal(sig) {
				continue // nothing to reload yet
			}
			cancel()
			<-done
			return sig, nil
		}
	}
}

// waitForPrimary returns once the primary accepts connections, logging in with the
// standby's credential as pg_basebackup will.
func waitForPrimary(ctx context.Context, cfg *Config) error {
	connector, err := newConnector([][2]string{
		{"host", cfg.PrimaryHost}, {"port", fmt.Sprint(cfg.PrimaryPort)}, {"user", cfg.User},
		{"passfile", cfg.Passfile()}, {"dbname", "postgres"}, {"sslmode", "prefer"},
		{"application_name", "pgops-agent"}, {"connect_timeout", "5"},
	}, 5*time.Second)
	if err != nil {
		return err
	}
	db := openDB(connector)
	defer db.Close()
	return waitUntil(ctx, 2*time.Second, 30*time.Second,
		func(ctx context.Context) bool { return classify(db.PingContext(ctx)) == accepting },
		func() { klog.InfoS("Still waiting for the primary", "host", cfg.PrimaryHost, "port", cfg.PrimaryPort) })
}
