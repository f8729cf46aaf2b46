package nodeagent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Probe timing: the pod's periodSeconds (at least probeMinPeriod), except that a readiness
// probe that has not succeeded yet since its container started runs every probeMinPeriod,
// so tests see a started container Ready within a second rather than a period; initial
// delays are capped too. Steady-state probes keep the pod's period: a node of hundreds of
// pods probing each every second or two would spend its CPU on the probes.
const (
	probeMinPeriod      = time.Second
	probeMaxInitDelay   = 2 * time.Second
	probeMaxTimeout     = 10 * time.Second
	defaultPathElements = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// container runs one container of a pod: its process, restarts and probes.
type container struct {
	w    *podWorker
	spec corev1.Container
	init bool

	mu           sync.Mutex
	cur          *proc
	env          []string // of cur, for exec probes
	ready        bool
	starts       int // processes started so far
	restartCount int32
	waitReason   string
	waitMessage  string
	lastTerm     *corev1.ContainerStateTerminated
	final        *corev1.ContainerStateTerminated // will not run again
	stopping     bool
}

func newContainer(w *podWorker, spec corev1.Container, init bool) *container {
	return &container{w: w, spec: spec, init: init}
}

func (c *container) logf(format string, args ...any) {
	c.w.logf("container %s: %s", c.spec.Name, fmt.Sprintf(format, args...))
}

func (c *container) current() *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *container) setWaiting(reason, msg string) {
	c.mu.Lock()
	c.waitReason, c.waitMessage = reason, msg
	c.mu.Unlock()
	c.w.notify()
}

// start resolves the environment and mounts and starts a process; nil, nil if the
// container is being stopped.
func (c *container) start() (*proc, error) {
	w, a := c.w, c.w.agent
	pod := w.pod()
	env, err := a.resolveEnv(w.ctx, envContext{
		pod: pod, podIP: w.podIP.String(), hostIP: a.hostIP, container: &c.spec, allocatable: a.allocatable,
	})
	if err != nil {
		c.setWaiting("CreateContainerConfigError", err.Error())
		return nil, err
	}
	if p, ok := env.get("PATH"); ok {
		if !strings.Contains(":"+p+":", ":"+a.pgBinDir+":") {
			env.set("PATH", p+":"+a.pgBinDir)
		}
	} else {
		env.set("PATH", a.pgBinDir+":"+defaultPathElements)
	}
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		hostname = hostname[:63]
	}
	if _, ok := env.get("HOSTNAME"); !ok {
		env.set("HOSTNAME", hostname)
	}
	id := a.containerIdentity(pod, &c.spec)
	if _, ok := env.get("HOME"); !ok {
		home := a.homeDir
		if !id.agentUser || home == "" || home == "/nonexistent" {
			home = "/"
		}
		env.set("HOME", home)
	}
	var argv []string
	for _, s := range c.spec.Command {
		argv = append(argv, expand(s, env.get))
	}
	for _, s := range c.spec.Args {
		argv = append(argv, expand(s, env.get))
	}
	mounts, err := w.mountsFor(&c.spec, env)
	if err == nil {
		var accounts []mount
		accounts, err = a.accountFiles(id, c.spec.Image, filepath.Join(a.podDir(string(pod.UID)), "accounts", c.spec.Name))
		mounts = append(accounts, mounts...)
	}
	if err != nil {
		c.setWaiting("CreateContainerError", err.Error())
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, nil
	}
	if c.starts > 0 {
		c.restartCount++
	}
	p, err := a.startProc(procSpec{
		argv: argv, env: env.environ(), workDir: c.spec.WorkingDir, mounts: mounts, hostname: hostname, id: id,
		netns:   w.netns,
		logPath: a.LogPath(pod.Namespace, pod.Name, c.spec.Name),
		banner: fmt.Sprintf("starting container %s of pod %s/%s (uid %s, restart %d)",
			c.spec.Name, pod.Namespace, pod.Name, pod.UID, c.restartCount),
	})
	if err != nil {
		c.waitReason, c.waitMessage = "RunContainerError", err.Error()
		return nil, err
	}
	c.starts++
	c.cur, c.env, c.ready = p, env.environ(), false
	c.waitReason, c.waitMessage = "", ""
	if c.spec.ReadinessProbe == nil && !c.init {
		c.ready = true
	}
	c.logf("started, pid %d", p.pid)
	return p, nil
}

// exited records the end of process p.
func (c *container) exited(p *proc, restart bool) *corev1.ContainerStateTerminated {
	reason := "Completed"
	if p.exitCode != 0 {
		reason = "Error"
	}
	t := &corev1.ContainerStateTerminated{
		ExitCode:    int32(p.exitCode),
		Reason:      reason,
		StartedAt:   metav1.NewTime(p.startedAt.Truncate(time.Second)),
		FinishedAt:  metav1.NewTime(p.finishedAt.Truncate(time.Second)),
		ContainerID: containerID(p),
	}
	if p.signaled {
		t.Signal = int32(p.exitCode - 128)
	}
	c.mu.Lock()
	c.ready = false
	c.lastTerm = t
	if !restart {
		c.final = t
	}
	c.mu.Unlock()
	c.logf("exited with code %d", p.exitCode)
	c.w.notify()
	return t
}

func containerID(p *proc) string { return "nodeagent://" + strconv.Itoa(p.pid) }

// runOnce runs an init container to completion: its exit code, and false if the pod
// was stopped meanwhile.
func (c *container) runOnce() (int, bool) {
	for {
		p, err := c.start()
		if err != nil {
			c.logf("%v", err)
			if !c.w.sleep(setupRetry) {
				return 0, false
			}
			continue
		}
		if p == nil {
			return 0, false
		}
		c.w.notify()
		select {
		case <-p.done:
		case <-c.w.ctx.Done():
			return 0, false
		}
		c.exited(p, p.exitCode != 0)
		return p.exitCode, true
	}
}

// runLoop runs a regular container until the pod stops, restarting it per the pod's
// restartPolicy.
func (c *container) runLoop() {
	w := c.w
	backoff := restartBackoffMin
	for w.ctx.Err() == nil {
		p, err := c.start()
		if err != nil {
			c.logf("%v", err)
			if !w.sleep(setupRetry) {
				return
			}
			continue
		}
		if p == nil {
			return
		}
		w.notify()
		probeCtx, stopProbes := context.WithCancel(w.ctx)
		go c.probe(probeCtx, p)
		select {
		case <-p.done:
		case <-w.ctx.Done():
			stopProbes()
			return // stop() takes the process down
		}
		stopProbes()
		restart := false
		switch w.pod().Spec.RestartPolicy {
		case corev1.RestartPolicyNever:
		case corev1.RestartPolicyOnFailure:
			restart = p.exitCode != 0
		default:
			restart = true
		}
		c.exited(p, restart)
		if !restart || w.ctx.Err() != nil {
			return
		}
		if p.finishedAt.Sub(p.startedAt) >= restartBackoffReset {
			backoff = restartBackoffMin
		}
		c.setWaiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", backoff, c.spec.Name))
		if !w.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, restartBackoffMax)
	}
}

// stop keeps the container from starting again and terminates its process.
func (c *container) stop(grace time.Duration) {
	c.mu.Lock()
	c.stopping = true
	p := c.cur
	c.mu.Unlock()
	if p != nil && !p.exited() {
		sig := stopSignal(&c.spec)
		c.logf("stopping with %s (grace %s)", sig, grace)
		p.terminate(sig, grace)
	}
}

var signalsByName = map[corev1.Signal]syscall.Signal{
	corev1.SIGINT: syscall.SIGINT, corev1.SIGTERM: syscall.SIGTERM, corev1.SIGQUIT: syscall.SIGQUIT,
	corev1.SIGKILL: syscall.SIGKILL, corev1.SIGHUP: syscall.SIGHUP, corev1.SIGUSR1: syscall.SIGUSR1,
	corev1.SIGUSR2: syscall.SIGUSR2,
}

// stopSignal is the signal a container gets when it is stopped: lifecycle.stopSignal
// if set; else what the image would declare, as far as the agent knows images:
// SIGINT for the official postgres image (its STOPSIGNAL, a fast shutdown that does
// not wait for clients to disconnect), SIGTERM for everything else.
func stopSignal(c *corev1.Container) syscall.Signal {
	if c.Lifecycle != nil && c.Lifecycle.StopSignal != nil {
		if sig, ok := signalsByName[*c.Lifecycle.StopSignal]; ok {
			return sig
		}
	}
	if imageRepoBase(c.Image) == "postgres" {
		return syscall.SIGINT
	}
	return syscall.SIGTERM
}

// status is the container's ContainerStatus.
func (c *container) status(initDone bool) corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      "nodeagent://" + c.spec.Image,
		RestartCount: c.restartCount,
		Started:      ptr.To(false),
	}
	if c.lastTerm != nil && c.lastTerm != c.final {
		s.LastTerminationState.Terminated = c.lastTerm
	}
	switch {
	case c.cur != nil && !c.cur.exited() && c.final == nil:
		s.ContainerID = containerID(c.cur)
		s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.cur.startedAt.Truncate(time.Second))}
		s.Ready = c.ready
		s.Started = ptr.To(true)
	case c.final != nil:
		s.ContainerID = c.final.ContainerID
		s.State.Terminated = c.final
		if c.lastTerm == c.final {
			s.LastTerminationState = corev1.ContainerState{}
		}
		s.Ready = false
	default:
		reason, msg := c.waitReason, c.waitMessage
		if reason == "" {
			reason = "ContainerCreating"
			if !initDone && !c.init {
				reason = "PodInitializing"
			}
		}
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	}
	if c.init && c.final != nil && c.final.ExitCode == 0 {
		s.Ready = true
	}
	return s
}

// probe runs the container's startup, readiness and liveness probes against process
// p until ctx ends.
func (c *container) probe(ctx context.Context, p *proc) {
	if c.init || !p.waitSetUp(ctx) {
		return
	}
	if sp := c.spec.StartupProbe; sp != nil {
		if !c.probeUntil(ctx, p, sp, "startup") {
			return
		}
	}
	var wg sync.WaitGroup
	if rp := c.spec.ReadinessProbe; rp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.probeUntil(ctx, p, rp, "readiness")
		}()
	}
	if lp := c.spec.LivenessProbe; lp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.probeUntil(ctx, p, lp, "liveness")
		}()
	}
	wg.Wait()
}

func probeTiming(pr *corev1.Probe) (initial, period, timeout time.Duration, success, failure int) {
	initial = min(time.Duration(pr.InitialDelaySeconds)*time.Second, probeMaxInitDelay)
	period = max(time.Duration(pr.PeriodSeconds)*time.Second, probeMinPeriod)
	timeout = min(max(time.Duration(pr.TimeoutSeconds)*time.Second, time.Second), probeMaxTimeout)
	success, failure = max(int(pr.SuccessThreshold), 1), max(int(pr.FailureThreshold), 1)
	return
}

// probeUntil runs one probe periodically. A startup probe returns true on its first
// success (and kills the process after failureThreshold failures); readiness sets
// the ready flag; liveness kills the process after failureThreshold failures.
func (c *container) probeUntil(ctx context.Context, p *proc, pr *corev1.Probe, kind string) bool {
	initial, period, timeout, success, failure := probeTiming(pr)
	// As the kubelet counts it, the initial delay runs from the container's start, not
	// from the end of its startup probe.
	t := time.NewTimer(time.Until(p.startedAt.Add(initial)))
	defer t.Stop()
	okRun, failRun := 0, 0
	everOK := false
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return false
		case <-p.done:
			return false
		case <-t.C:
		}
		err := c.runProbe(ctx, p, pr, timeout)
		if ctx.Err() != nil || p.exited() {
			return false
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
			lastErr = ""
		} else {
			okRun, failRun = 0, failRun+1
			if msg := err.Error(); msg != lastErr {
				c.logf("%s probe failed: %s", kind, msg)
				lastErr = msg
			}
		}
		switch kind {
		case "startup":
			if err == nil {
				return true
			}
			if failRun >= failure {
				c.logf("startup probe failed %d times; killing", failRun)
				p.kill(syscall.SIGKILL)
				return false
			}
		case "liveness":
			if failRun >= failure {
				c.logf("liveness probe failed %d times; killing", failRun)
				p.kill(syscall.SIGKILL)
				return false
			}
		case "readiness":
			c.mu.Lock()
			changed := false
			if c.cur == p {
				if !c.ready && okRun >= success {
					c.ready, changed = true, true
				} else if c.ready && failRun >= failure {
					c.ready, changed = false, true
				}
			}
			c.mu.Unlock()
			if changed {
				c.logf("ready=%v", okRun > 0)
				c.w.notify()
			}
		}
		everOK = everOK || err == nil
		if kind == "readiness" && !everOK {
			t.Reset(min(period, probeMinPeriod)) // not up yet since the start
		} else {
			t.Reset(period)
		}
	}
}

// runProbe runs one probe: nil on success.
func (c *container) runProbe(ctx context.Context, p *proc, pr *corev1.Probe, timeout time.Duration) error {
	w := c.w
	switch {
	case pr.Exec != nil:
		c.mu.Lock()
		env := c.env
		c.mu.Unlock()
		lookup := func(name string) (string, bool) {
			for _, kv := range env {
				if k, v, _ := strings.Cut(kv, "="); k == name {
					return v, true
				}
			}
			return "", false
		}
		var argv []string
		for _, s := range pr.Exec.Command {
			argv = append(argv, expand(s, lookup))
		}
		out, err := w.agent.execIn(ctx, p.pid, p.id, argv, env, timeout)
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	case pr.HTTPGet != nil:
		g := pr.HTTPGet
		port, err := c.resolvePort(g.Port)
		if err != nil {
			return err
		}
		host := g.Host
		if host == "" {
			host = w.podIP.String()
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path), nil)
		if err != nil {
			return err
		}
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true,
		}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe returned %d", resp.StatusCode)
		}
		return nil
	case pr.TCPSocket != nil:
		port, err := c.resolvePort(pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := pr.TCPSocket.Host
		if host == "" {
			host = w.podIP.String()
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return nil // gRPC probes are not supported: they pass
}

// resolvePort turns a probe's port (a number or a container port name) into a number.
func (c *container) resolvePort(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}
