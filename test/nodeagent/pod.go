package nodeagent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Restart backoff of exited containers: doubling from restartBackoffMin up to
// restartBackoffMax, back to the minimum after a container ran restartBackoffReset.
const (
	restartBackoffMin   = time.Second
	restartBackoffMax   = 10 * time.Second
	restartBackoffReset = 10 * time.Second
	// maxGracePeriod caps terminationGracePeriodSeconds; stopGracePeriod is the cap
	// when the agent itself stops.
	maxGracePeriod  = 30 * time.Second
	stopGracePeriod = 10 * time.Second
	// setupRetry is how often a pod whose volumes or environment cannot be prepared
	// (a missing Secret, say) is retried.
	setupRetry = 2 * time.Second
)

// podWorker runs one pod (one UID) from first sight to deletion.
type podWorker struct {
	agent     *Agent
	uid       types.UID
	namespace string
	name      string

	ctx    context.Context // ends when the pod is to be stopped
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // status may have changed

	mu       sync.Mutex
	latest   *corev1.Pod
	deleting bool // deletionTimestamp seen
	gone     bool // the object was deleted
	shutdown bool // the agent stops
	// Set by run before any container starts, then read-only.
	podIP netip.Addr
	// netns is the path of the pod's network namespace.
	netns      string
	startTime  metav1.Time
	volumes    map[string]string // volume name -> host path (non-file volumes)
	setupDone  bool
	setupError string
	initDone   bool
	initFailed bool
	gen        int // file-volume generation

	initContainers []*container
	containers     []*container
	condTimes      map[corev1.PodConditionType]condState
	lastStatus     *corev1.PodStatus
}

type condState struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	ctx, cancel := context.WithCancel(a.ctx)
	w := &podWorker{
		agent: a, uid: pod.UID, namespace: pod.Namespace, name: pod.Name,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		latest: pod, condTimes: map[corev1.PodConditionType]condState{},
	}
	for i := range pod.Spec.InitContainers {
		w.initContainers = append(w.initContainers, newContainer(w, pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		w.containers = append(w.containers, newContainer(w, pod.Spec.Containers[i], false))
	}
	if pod.DeletionTimestamp != nil {
		w.deleting = true
		cancel()
	}
	return w
}

func (w *podWorker) pod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

func (w *podWorker) key() string { return w.namespace + "/" + w.name }

func (w *podWorker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.latest = pod
	if pod.DeletionTimestamp != nil && !w.deleting {
		w.deleting = true
		w.cancel()
	}
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) objectGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.cancel()
}

// stopForShutdown stops the pod's containers because the agent stops, and waits.
func (w *podWorker) stopForShutdown() {
	w.mu.Lock()
	w.shutdown = true
	w.mu.Unlock()
	w.cancel()
	<-w.done
}

func (w *podWorker) logf(format string, args ...any) {
	w.agent.logf("pod %s: %s", w.key(), fmt.Sprintf(format, args...))
}

// sleep waits d or until the worker's context ends; false if it ended.
func (w *podWorker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (w *podWorker) run() {
	defer close(w.done)
	pod := w.pod()
	statusDone := make(chan struct{})
	statusCtx, stopStatus := context.WithCancel(context.Background())
	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed

	if !terminal && w.ctx.Err() == nil {
		ip, err := w.agent.ipam.allocate(w.uid, pod.Status.PodIP)
		var netns string
		if err == nil {
			if netns, err = w.agent.Network.addPod(w.uid, ip); err != nil {
				w.agent.ipam.release(ip)
			}
		}
		if err != nil {
			w.logf("no pod network: %v", err)
		} else {
			w.mu.Lock()
			w.podIP, w.netns = ip, netns
			w.startTime = metav1.Now()
			if pod.Status.StartTime != nil {
				w.startTime = *pod.Status.StartTime
			}
			w.mu.Unlock()
			w.logf("assigned IP %s", ip)
			go func() {
				defer close(statusDone)
				w.statusLoop(statusCtx)
			}()
			w.notify()
			w.runContainers()
		}
	}
	if !w.podIP.IsValid() {
		close(statusDone)
	}

	<-w.ctx.Done()
	w.mu.Lock()
	shutdown, gone := w.shutdown, w.gone
	w.mu.Unlock()
	grace := w.gracePeriod(shutdown, gone)
	var wg sync.WaitGroup
	for _, c := range append(append([]*container{}, w.initContainers...), w.containers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(grace)
		}()
	}
	wg.Wait()
	stopStatus()
	<-statusDone
	if w.netns != "" {
		w.agent.Network.removePod(w.uid)
	}
	if shutdown {
		w.logf("containers stopped (agent stopping)")
		if w.podIP.IsValid() {
			w.markNotReady()
		}
		return
	}
	w.logf("containers stopped; removing the pod")
	_ = os.RemoveAll(w.agent.podDir(string(w.uid)))
	if w.podIP.IsValid() {
		w.agent.ipam.release(w.podIP)
	}
	w.agent.forget(w.uid)
	if !gone {
		w.deleteObject()
	}
}

// markNotReady reports, best effort, that the pod's containers stopped with the
// agent, so Services and operators do not take it for Ready while nobody runs it (no
// node-lifecycle controller would notice in a local cluster).
func (w *podWorker) markNotReady() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pods := w.agent.client.CoreV1().Pods(w.namespace)
	pod, err := pods.Get(ctx, w.name, metav1.GetOptions{})
	if err != nil || pod.UID != w.uid {
		return
	}
	now := metav1.Now()
	for i := range pod.Status.Conditions {
		c := &pod.Status.Conditions[i]
		if (c.Type == corev1.PodReady || c.Type == corev1.ContainersReady) && c.Status != corev1.ConditionFalse {
			c.Status, c.Reason, c.Message, c.LastTransitionTime = corev1.ConditionFalse, "NodeAgentStopped", "the node agent stopped", now
		}
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		cs.Ready = false
		if cs.State.Running != nil {
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "NodeAgentStopped"}}
		}
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		w.logf("mark NotReady: %v", err)
	}
}

// gracePeriod is how long containers get between SIGTERM and SIGKILL.
func (w *podWorker) gracePeriod(shutdown, gone bool) time.Duration {
	pod := w.pod()
	grace := maxGracePeriod
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	grace = min(grace, maxGracePeriod)
	if shutdown {
		grace = min(grace, stopGracePeriod)
	}
	if gone {
		grace = min(grace, 2*time.Second)
	}
	return grace
}

// deleteObject removes the pod object once its containers are gone, as the kubelet
// does: grace period 0, only this UID (a pod recreated under the same name stays).
func (w *podWorker) deleteObject() {
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := context.WithTimeout(w.agent.ctx, 10*time.Second)
		err := w.agent.client.CoreV1().Pods(w.namespace).Delete(ctx, w.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &w.uid},
		})
		cancel()
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || w.agent.ctx.Err() != nil {
			return
		}
		w.logf("delete pod object: %v", err)
		time.Sleep(time.Second)
	}
}

// runContainers prepares the pod's volumes, runs its init containers to completion
// and starts its containers. It returns once they run (or the pod is stopped).
func (w *podWorker) runContainers() {
	for {
		err := w.prepareVolumes()
		w.mu.Lock()
		w.setupDone = err == nil
		w.setupError = ""
		if err != nil {
			w.setupError = err.Error()
		}
		w.mu.Unlock()
		w.notify()
		if err == nil {
			break
		}
		w.logf("volumes: %v", err)
		if !w.sleep(setupRetry) {
			return
		}
	}

	policy := w.pod().Spec.RestartPolicy
	for _, c := range w.initContainers {
		backoff := restartBackoffMin
		for {
			code, ok := c.runOnce()
			if !ok {
				return // stopped
			}
			if code == 0 {
				break
			}
			if policy == corev1.RestartPolicyNever {
				w.mu.Lock()
				w.initFailed = true
				w.mu.Unlock()
				w.notify()
				return
			}
			if !w.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, restartBackoffMax)
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.notify()
	for _, c := range w.containers {
		go c.runLoop()
	}
}

// prepareVolumes makes the pod's non-file volumes (emptyDir, PVC, hostPath); file
// volumes are written per container start.
func (w *podWorker) prepareVolumes() error {
	pod := w.pod()
	vols := map[string]string{}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if isFileVolume(v) {
			continue
		}
		p, err := w.prepareVolume(w.ctx, v, 0)
		if err != nil {
			return err
		}
		vols[v.Name] = p
	}
	w.mu.Lock()
	w.volumes = vols
	w.mu.Unlock()
	return nil
}

// mountsFor returns the bind mounts of container c, writing its file volumes afresh.
func (w *podWorker) mountsFor(c *corev1.Container, env *envList) ([]mount, error) {
	pod := w.pod()
	w.mu.Lock()
	w.gen++
	gen := w.gen
	vols := w.volumes
	w.mu.Unlock()
	byName := map[string]*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		byName[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	fileVols := map[string]string{}
	var mounts []mount
	for _, vm := range c.VolumeMounts {
		v := byName[vm.Name]
		if v == nil {
			return nil, fmt.Errorf("volumeMount %s: no such volume", vm.Name)
		}
		src, ok := vols[vm.Name]
		if isFileVolume(v) {
			if src, ok = fileVols[vm.Name]; !ok {
				p, err := w.prepareVolume(w.ctx, v, gen)
				if err != nil {
					return nil, err
				}
				fileVols[vm.Name], src, ok = p, p, true
			}
		}
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: volume not prepared", vm.Name)
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, env.get)
		}
		isFile := false
		if sub != "" {
			if filepath.IsAbs(sub) || strings.Contains(sub, "..") {
				return nil, fmt.Errorf("volumeMount %s: invalid subPath %q", vm.Name, sub)
			}
			src = filepath.Join(src, sub)
			fi, err := os.Stat(src)
			switch {
			case err == nil:
				isFile = !fi.IsDir()
			case os.IsNotExist(err) && !isFileVolume(v):
				if err := w.agent.makeDir(src, 0o755, w.agent.volumeOwner(pod)); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("volumeMount %s: subPath %q: %w", vm.Name, sub, err)
			}
		}
		mounts = append(mounts, mount{
			src: src, dst: filepath.Clean(vm.MountPath), file: isFile,
			readOnly: vm.ReadOnly || isFileVolume(v),
		})
	}
	return mounts, nil
}

// statusLoop writes the pod's status whenever it changes, until ctx ends.
func (w *podWorker) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		if err := w.writeStatus(ctx); err != nil && ctx.Err() == nil {
			if apierrors.IsNotFound(err) {
				continue // deleted; the informer tells the worker
			}
			w.logf("status: %v", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
				w.notify()
			}
		}
	}
}

func (w *podWorker) writeStatus(ctx context.Context) error {
	w.mu.Lock()
	deleting := w.deleting
	w.mu.Unlock()
	if deleting {
		return nil
	}
	st := w.buildStatus()
	if w.lastStatus != nil && apiequality.Semantic.DeepEqual(st, w.lastStatus) {
		return nil
	}
	pods := w.agent.client.CoreV1().Pods(w.namespace)
	pod, err := pods.Get(ctx, w.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if pod.UID != w.uid {
		return apierrors.NewNotFound(corev1.Resource("pods"), w.name)
	}
	pod.Status.Phase = st.Phase
	pod.Status.PodIP, pod.Status.PodIPs = st.PodIP, st.PodIPs
	pod.Status.HostIP, pod.Status.HostIPs = st.HostIP, st.HostIPs
	pod.Status.StartTime = st.StartTime
	pod.Status.ContainerStatuses = st.ContainerStatuses
	pod.Status.InitContainerStatuses = st.InitContainerStatuses
	pod.Status.Reason, pod.Status.Message = st.Reason, st.Message
	ours := map[corev1.PodConditionType]bool{}
	for _, c := range st.Conditions {
		ours[c.Type] = true
	}
	conds := append([]corev1.PodCondition{}, st.Conditions...)
	for _, c := range pod.Status.Conditions {
		if !ours[c.Type] {
			conds = append(conds, c)
		}
	}
	pod.Status.Conditions = conds
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return err
	}
	w.lastStatus = st
	return nil
}

// cond returns a condition whose lastTransitionTime moves only when status changes.
func (w *podWorker) cond(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	cs, seen := w.condTimes[t]
	if !seen || cs.status != status {
		cs = condState{status: status, since: metav1.NewTime(time.Now().Truncate(time.Second))}
		w.condTimes[t] = cs
	}
	c := corev1.PodCondition{Type: t, Status: status, LastTransitionTime: cs.since}
	if !ok {
		c.Reason = reason
	}
	return c
}

// buildStatus computes the status the agent reports for the pod.
func (w *podWorker) buildStatus() *corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &corev1.PodStatus{
		PodIP:     w.podIP.String(),
		PodIPs:    []corev1.PodIP{{IP: w.podIP.String()}},
		HostIP:    w.agent.hostIP,
		HostIPs:   []corev1.HostIP{{IP: w.agent.hostIP}},
		StartTime: &w.startTime,
	}
	var initStatuses, statuses []corev1.ContainerStatus
	for _, c := range w.initContainers {
		initStatuses = append(initStatuses, c.status(w.initDone))
	}
	for _, c := range w.containers {
		statuses = append(statuses, c.status(w.initDone))
	}
	st.InitContainerStatuses, st.ContainerStatuses = initStatuses, statuses

	allReady, neverStarted, active, failed := true, false, false, false
	for _, s := range statuses {
		allReady = allReady && s.Ready
		switch {
		case s.State.Terminated != nil:
			failed = failed || s.State.Terminated.ExitCode != 0
		case s.State.Running != nil:
			active = true
		case s.LastTerminationState.Terminated != nil:
			active = true // restarting
		default:
			neverStarted = true
		}
	}
	switch {
	case w.initFailed:
		st.Phase = corev1.PodFailed
	case !w.initDone || neverStarted:
		st.Phase = corev1.PodPending
	case active:
		st.Phase = corev1.PodRunning
	case failed:
		st.Phase = corev1.PodFailed
	default:
		st.Phase = corev1.PodSucceeded
	}
	if w.setupError != "" {
		st.Message = w.setupError
	}

	containersReady := allReady && w.initDone && len(statuses) > 0
	ready := containersReady
	for _, gate := range w.latest.Spec.ReadinessGates {
		gateOK := false
		for _, c := range w.latest.Status.Conditions {
			if c.Type == gate.ConditionType && c.Status == corev1.ConditionTrue {
				gateOK = true
			}
		}
		ready = ready && gateOK
	}
	st.Conditions = []corev1.PodCondition{
		w.cond(corev1.PodReadyToStartContainers, w.setupDone, "ContainerCreating"),
		w.cond(corev1.PodInitialized, w.initDone, "ContainersNotInitialized"),
		w.cond(corev1.ContainersReady, containersReady, "ContainersNotReady"),
		w.cond(corev1.PodReady, ready, "ContainersNotReady"),
	}
	return st
}

func (w *podWorker) killContainers() int {
	n := 0
	for _, c := range append(append([]*container{}, w.initContainers...), w.containers...) {
		if p := c.current(); p != nil && !p.exited() {
			w.logf("container %s: SIGKILL (KillContainer)", c.spec.Name)
			p.kill(9)
			n++
		}
	}
	return n
}

func (w *podWorker) containerPID(name string) int {
	for _, c := range w.containers {
		if name == "" || c.spec.Name == name {
			if p := c.current(); p != nil && !p.exited() {
				return p.pid
			}
			if name == "" {
				return 0
			}
		}
	}
	return 0
}

func (w *podWorker) pids() []int {
	var out []int
	for _, c := range append(append([]*container{}, w.initContainers...), w.containers...) {
		if p := c.current(); p != nil && !p.exited() {
			out = append(out, p.pid)
		}
	}
	return out
}
