package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
)

// forwardedSignals are passed on to postgres as they come, so it behaves as if it were PID
// 1 itself, as under the shell entrypoint: SIGTERM (the kubelet's stop) is a smart
// shutdown, SIGINT a fast one, SIGQUIT an immediate one, SIGHUP a reload.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2}

// serverArgs are postgres's arguments.
//
// wal_retrieve_retry_interval: a standby whose primary restarted (a rotation, a node drain)
// tries to stream again after 1 s, not after PostgreSQL's default 5 s.
// wal_sender_timeout, wal_receiver_timeout: 5 s, not 60 s, as CloudNativePG sets them. A
// primary's fast shutdown waits for every WAL sender to see its standby confirm the last
// WAL, and a sender whose standby vanished without a word (its pod gone, its node lost)
// waits out this timeout: with 60 s the kubelet kills the primary at its 30 s grace, and a
// rotation's restart of the primary stalls for that long. A standby likewise notices a
// vanished primary within 5 s.
func serverArgs(c *Config) []string {
	return []string{
		"-D", c.DataDir,
		"-c", "listen_addresses=*",
		"-c", "unix_socket_directories=" + c.RunDir,
		"-c", "hot_standby=" + c.HotStandby(),
		"-c", "wal_retrieve_retry_interval=1s",
		"-c", "wal_sender_timeout=5s",
		"-c", "wal_receiver_timeout=5s",
	}
}

// childEnv is the agent's environment without the password, plus extra: PostgreSQL's
// programs do not need it, and a server process's environment is readable by its user.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTGRES_PASSWORD=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runProgram runs a PostgreSQL program to completion, its output in the container's log. A
// stop of the pod while it runs (ctx ends) stops it with SIGTERM.
func runProgram(ctx context.Context, extraEnv []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv(extraEnv...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	return cmd.Run()
}

// supervise starts postgres and waits for it to exit, forwarding signals to it and reaping
// every other child: as PID 1 of the container, the agent inherits the orphans of
// `kubectl exec` sessions. It returns postgres's exit code (128 + the signal for a killed
// server, as a shell reports it), for the agent's own.
//
// Before a stop signal (SIGTERM, SIGINT, SIGQUIT) is passed on, stopping is called.
func supervise(c *Config, signals <-chan os.Signal, started func(pid int), stopping func()) (int, error) {
	// SIGCHLD is noticed before the server starts, so no exit is missed.
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	defer signal.Stop(children)

	path, err := exec.LookPath("postgres")
	if err != nil {
		return 0, err
	}
	proc, err := os.StartProcess(path, append([]string{"postgres"}, serverArgs(c)...), &os.ProcAttr{
		Env:   childEnv(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return 0, fmt.Errorf("starting postgres: %w", err)
	}
	pid := proc.Pid
	// The process is waited for below with wait4, which reaps orphans too; os.Process
	// must not wait for it as well.
	_ = proc.Release()
	started(pid)
	// Children of the preparation that exited after it (an orphan of a killed program)
	// sent their SIGCHLD before anyone reaped: collect them now, and postgres if it has
	// already failed.
	if code, exited := reap(pid); exited {
		return code, nil
	}
	for {
		select {
		case sig := <-signals:
			if isStopSignal(sig) {
				stopping()
			}
			klog.InfoS("Passing a signal on to postgres", "signal", sig.String())
			if err := syscall.Kill(pid, sig.(syscall.Signal)); err != nil {
				klog.ErrorS(err, "Passing a signal on to postgres", "signal", sig.String())
			}
		case <-children:
			if code, exited := reap(pid); exited {
				return code, nil
			}
		}
	}
}

// reap collects every child that has exited; it tells whether pid was one, and its exit
// code.
func reap(pid int) (code int, exited bool) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || got <= 0 {
			return code, exited
		}
		if got != pid {
			continue
		}
		exited = true
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		}
	}
}

// isStopSignal tells whether sig asks postgres to shut down.
func isStopSignal(sig os.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT
}
