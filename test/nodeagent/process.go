package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// mount is one bind mount of a container: a host path made visible at a path inside
// the container's private mount namespace.
type mount struct {
	src, dst string
	readOnly bool
	// file is set when src is a regular file (a subPath into a ConfigMap volume).
	file bool
}

// procSpec is everything needed to start one container process.
type procSpec struct {
	argv     []string
	env      []string
	workDir  string
	mounts   []mount
	hostname string
	// id is who the process runs as; an exec into the container runs as the same.
	id identity
	// netns is the pod's network namespace, which the process joins.
	netns   string
	logPath string
	// what is written to the log before the process's own output. Never the
	// environment or the expanded argv: they may hold credentials.
	banner string
}

// proc is a running (or exited) container process. Its pid is also its process
// group id: every signal goes to the whole group, as a container runtime would kill
// the whole container.
type proc struct {
	cmd       *exec.Cmd
	pid       int
	id        identity
	startedAt time.Time
	done      chan struct{}
	// setUp is closed once the container's namespaces and mounts are in place (its
	// command is being exec'd) or the process ended: an exec before that would run
	// in the agent's namespaces, or see the node's directories under the mount points.
	setUp chan struct{}
	// Valid once done is closed.
	exitCode   int
	finishedAt time.Time
	signaled   bool

	// The container's mount namespace ("mnt:[inode]") identifies all of its
	// processes, also those that left the process group: PostgreSQL's children call
	// setsid(). nsFile pins the namespace so its inode number cannot be reused while
	// the agent may still signal by it.
	nsMu   sync.Mutex
	nsID   string
	nsFile *os.File
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// containerScript is the sh script that runs (as root) inside the new mount and UTS
// namespaces: set the hostname, make the bind mounts (creating missing mount points,
// which are on the host's file system unless an earlier mount covers them), change
// to the working directory, and exec the container's argv ("$@") as the agent's user
// with setpriv. The parent-death signal is set again after the identity change (the
// kernel clears it on a credential change), so a container dies with the agent.
func (a *Agent) containerScript(spec procSpec) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	if spec.hostname != "" && a.tools.hostname != "" {
		fmt.Fprintf(&b, "%s %s\n", shellQuote(a.tools.hostname), shellQuote(spec.hostname))
	}
	mnt := shellQuote(a.tools.mount)
	// Sources below the agent's root are named relative to it, from a working directory
	// taken before any mount: a volume mounted over a parent of the root (an emptyDir at
	// /tmp, when the root is a temp dir) must not hide the sources of the mounts after it.
	if a.rootDir != "" {
		fmt.Fprintf(&b, "cd %s\n", shellQuote(a.rootDir))
	}
	for _, m := range spec.mounts {
		src := m.src
		if rel, err := filepath.Rel(a.rootDir, src); a.rootDir != "" && err == nil && filepath.IsLocal(rel) {
			src = "./" + rel
		}
		if m.file {
			fmt.Fprintf(&b, "mkdir -p %s\n[ -e %s ] || : >%s\n", shellQuote(filepath.Dir(m.dst)), shellQuote(m.dst), shellQuote(m.dst))
		} else {
			fmt.Fprintf(&b, "mkdir -p %s\n", shellQuote(m.dst))
		}
		fmt.Fprintf(&b, "%s --bind %s %s\n", mnt, shellQuote(src), shellQuote(m.dst))
		if m.readOnly {
			fmt.Fprintf(&b, "%s -o remount,bind,ro %s\n", mnt, shellQuote(m.dst))
		}
	}
	if spec.id.readOnlyRoot {
		// readOnlyRootFilesystem: the root is read-only in this namespace only; the
		// volumes mounted above stay as they are.
		fmt.Fprintf(&b, "%s -o remount,bind,ro /\n", mnt)
	}
	wd := spec.workDir
	if wd == "" {
		wd = "/"
	}
	fmt.Fprintf(&b, "cd %s\n", shellQuote(wd))
	// Tell the agent the container is set up (on the descriptor setUpFD), and keep the
	// descriptor from the container's command.
	fmt.Fprintf(&b, "echo >&%[1]d\nexec %[1]d>&-\n", setUpFD)
	fmt.Fprintf(&b, "exec %s\n", strings.Join(a.setprivArgs(spec.id, true), " "))
	return b.String()
}

// setprivArgs is the command prefix that drops to id; "$@" or the argv follows.
func (a *Agent) setprivArgs(id identity, shell bool) []string {
	args := append([]string{a.tools.setpriv}, a.setprivIdentity(id)...)
	args = append(args, "--pdeathsig=SIGKILL", "--")
	if shell {
		args[0] = shellQuote(args[0])
		args = append(args, `"$@"`)
	}
	return args
}

// setUpFD is the descriptor on which the container script reports that it is set up:
// exec.Cmd's first ExtraFiles entry.
const setUpFD = 3

// startProc starts a container process: unshare(1) gives it private mount and UTS
// namespaces, the script sets them up and execs the command, so the pid stays the
// same from unshare to the container's command.
func (a *Agent) startProc(spec procSpec) (*proc, error) {
	if len(spec.argv) == 0 {
		return nil, errors.New("container has neither command nor args (the image's entrypoint is unknown here)")
	}
	if err := os.MkdirAll(filepath.Dir(spec.logPath), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "%s nodeagent: %s\n", time.Now().UTC().Format(time.RFC3339), spec.banner)

	args := []string{"--mount", "--propagation", "private"}
	if spec.hostname != "" && a.tools.hostname != "" {
		args = append(args, "--uts")
	}
	args = append(args, "--", "/bin/sh", "-c", a.containerScript(spec), "sh")
	args = append(args, spec.argv...)
	cmd := exec.Command(a.tools.unshare, args...)
	if spec.netns != "" {
		// nsenter execs unshare in the pod's network namespace: still one pid.
		cmd = exec.Command(a.tools.nsenter, append([]string{"--net=" + spec.netns, "--", a.tools.unshare}, args...)...)
	}
	cmd.Env = spec.env
	cmd.Dir = "/"
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	setUpR, setUpW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{setUpW}
	err = cmd.Start()
	setUpW.Close() // the child has its own; EOF once it is set up or gone
	if err != nil {
		setUpR.Close()
		return nil, fmt.Errorf("start container process: %w", err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, id: spec.id, startedAt: time.Now(), done: make(chan struct{}), setUp: make(chan struct{})}
	waited := make(chan struct{})
	go func() {
		_, _ = setUpR.Read(make([]byte, 1))
		setUpR.Close()
		p.pinNamespace(waited)
		close(p.setUp)
	}()
	go func() {
		err := cmd.Wait()
		close(waited)
		p.finishedAt = time.Now()
		p.exitCode = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.signaled = true
				p.exitCode = 128 + int(ws.Signal())
			} else {
				p.exitCode = ee.ExitCode()
			}
		} else if err != nil {
			p.exitCode = 128
		}
		// A container ends with its main process: take down whatever it left behind
		// (PostgreSQL backends after a SIGKILLed postmaster would otherwise hold the
		// shared memory the next postmaster needs).
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		p.nsMu.Lock()
		killNamespace(p.nsID, syscall.SIGKILL)
		if p.nsFile != nil {
			p.nsFile.Close()
			p.nsFile = nil
		}
		p.nsID = ""
		p.nsMu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// waitSetUp waits until the container is set up; false if ctx ended or the process
// exited first.
func (p *proc) waitSetUp(ctx context.Context) bool {
	select {
	case <-p.setUp:
		return !p.exited()
	case <-p.done:
		return false
	case <-ctx.Done():
		return false
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ownMountNS is the agent's mount namespace.
var ownMountNS, _ = os.Readlink("/proc/self/ns/mnt")

// pinNamespace opens the mount namespace of the set-up container, unless the process
// was reaped already.
func (p *proc) pinNamespace(waited <-chan struct{}) {
	p.nsMu.Lock()
	defer p.nsMu.Unlock()
	select {
	case <-waited:
		return
	default:
	}
	path := fmt.Sprintf("/proc/%d/ns/mnt", p.pid)
	id, err := os.Readlink(path)
	if err != nil || id == ownMountNS {
		return // it ended before its set-up
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	// Still the same namespace (the pid is not reaped: waited is open and we hold nsMu,
	// which the reaper takes).
	if id2, _ := os.Readlink(path); id2 != id {
		f.Close()
		return
	}
	p.nsID, p.nsFile = id, f
}

// killNamespace sends sig to every process in mount namespace id.
func killNamespace(id string, sig syscall.Signal) {
	if id == "" || id == ownMountNS {
		return
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && ns == id {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// kill sends sig to the process group while the leader is not yet reaped; SIGKILL
// also goes to every other process of the container's mount namespace.
func (p *proc) kill(sig syscall.Signal) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid, sig)
	if sig == syscall.SIGKILL {
		p.nsMu.Lock()
		killNamespace(p.nsID, sig)
		p.nsMu.Unlock()
	}
}

// terminate sends sig (the container's stop signal) to the group, waits up to grace,
// then SIGKILLs it, and returns once the process is reaped.
func (p *proc) terminate(sig syscall.Signal, grace time.Duration) {
	p.kill(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.kill(syscall.SIGKILL)
		<-p.done
	}
}

// execIn runs argv inside the mount, network and UTS namespaces of the running process pid,
// as id, with env, and returns its combined output (truncated) and
// error. It is how exec probes run: they see the container's mounts.
func (a *Agent) execIn(ctx context.Context, pid int, id identity, argv, env []string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"--target", strconv.Itoa(pid), "--mount", "--net"}
	if a.tools.hostname != "" {
		args = append(args, "--uts")
	}
	if id.onlyPrimaryGroup() {
		// nsenter sets the uid and gid itself, dropping supplementary groups, which these
		// lack anyway: one process less than setpriv for every exec probe.
		args = append(args, "--setgid", strconv.Itoa(id.gid), "--setuid", strconv.Itoa(id.uid), "--")
	} else {
		args = append(args, "--")
		args = append(args, a.setprivArgs(id, false)...)
	}
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, a.tools.nsenter, args...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out limitedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	return out.b, err
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		l.b = append(l.b, p[:room]...)
	}
	return len(p), nil
}
