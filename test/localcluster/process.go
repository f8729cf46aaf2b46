package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is one component (of the control plane, or of a node: test/kubenode) running
// as a child of this process.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	// done is closed once the process has exited and err holds its wait status.
	done chan struct{}
	err  error
}

// StartProcess runs bin with args, its stdout and stderr going to logDir/name.log.
//
// The child gets its own process group, so a terminal's Ctrl-C reaches only the parent
// (which then tears down in order), and the whole group can be signalled at once. It
// also gets SIGKILL from the kernel when the thread that started it dies, so no
// component outlives a crashed test binary. (Pdeathsig is tied to the OS thread, not the
// process; the Go runtime only retires threads of goroutines that exit while locked
// to their thread, which this package never does.)
// env is the child's environment; nil means this process's.
func StartProcess(name, bin string, args []string, logDir string, env []string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logFile, "+ %s %s\n", bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id of the component (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has already terminated.
func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an unexpected exit, with the end of the component's log since
// that is where the reason is.
func (p *Process) exitError() error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.err, p.logPath, tail(p.logPath, 15))
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs the group.
// It returns once the process has been reaped.
func (p *Process) Stop(grace time.Duration) {
	if p.exited() {
		return
	}
	// Signal the group (pgid == pid, see Setpgid) only while its leader is unreaped:
	// after that the id could in principle belong to someone else.
	pgid := p.Pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// WaitFor polls check every interval until it returns true, ctx ends, or the process
// exits (then the error carries the process log tail).
func (p *Process) WaitFor(ctx context.Context, what string, check func(context.Context) (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		// Keep the last error that says something about the component, not the one
		// caused by ctx running out mid-check.
		if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-p.done:
			return fmt.Errorf("waiting for %s: %w", what, p.exitError())
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// tail returns the last n lines of the file at path, or a note why it could not.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
