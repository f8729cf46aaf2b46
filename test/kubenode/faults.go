package kubenode

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"

	"github.com/pgops/pgops/test/localcluster"
)

// Faults as they happen on real clusters, for tests: a container killed (a crash, an OOM
// kill), every process of a pod stopped (a hung process; unlike the cgroup v1 freezer,
// stopped processes can still be killed, so the kubelet can restart them), and a node
// lost (its kubelet, runtime and containers stopped together, as when a machine hangs or
// drops off the network).

// nodeOf is the node pod runs on.
func (ns *Nodes) nodeOf(pod *corev1.Pod) (*Node, error) {
	n := ns.Node(pod.Spec.NodeName)
	if n == nil {
		return nil, fmt.Errorf("pod %s/%s is on node %q, not one of these", pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	return n, nil
}

// containerCgroup is the cgroup of a running container of pod.
func (ns *Nodes) containerCgroup(pod *corev1.Pod, container string) (string, error) {
	n, err := ns.nodeOf(pod)
	if err != nil {
		return "", err
	}
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if s.Name != container || s.State.Running == nil {
			continue
		}
		_, id, ok := strings.Cut(s.ContainerID, "://")
		if !ok {
			return "", fmt.Errorf("container %s of pod %s/%s has ID %q", container, pod.Namespace, pod.Name, s.ContainerID)
		}
		if cg, ok := findCgroup(n.cgroupRoot, id); ok {
			return cg, nil
		}
		return "", fmt.Errorf("container %s of pod %s/%s (%s) has no cgroup on %s", container, pod.Namespace, pod.Name, id, n.Name)
	}
	return "", fmt.Errorf("pod %s/%s has no running container %s", pod.Namespace, pod.Name, container)
}

// KillContainer SIGKILLs every process of a running container of pod (as given: the
// caller reads it, so the container ID is the one it saw running).
func (ns *Nodes) KillContainer(pod *corev1.Pod, container string) error {
	cg, err := ns.containerCgroup(pod, container)
	if err != nil {
		return err
	}
	killCgroup(cg)
	return nil
}

// ContainerPID is the process id of the main process of a running container of pod (in
// the host's PID namespace).
func (ns *Nodes) ContainerPID(pod *corev1.Pod, container string) (int, error) {
	cg, err := ns.containerCgroup(pod, container)
	if err != nil {
		return 0, err
	}
	// The main process is the oldest one whose parent is outside the container: an exec'd
	// process (a probe) has its parent outside too, but started later.
	pids := cgroupPids(cg)
	in := map[int]bool{}
	for _, p := range pids {
		in[p] = true
	}
	main, oldest := 0, uint64(0)
	for _, p := range pids {
		ppid, started, ok := parentAndStart(p)
		if ok && !in[ppid] && (main == 0 || started < oldest) {
			main, oldest = p, started
		}
	}
	if main == 0 {
		return 0, fmt.Errorf("no process in %s", cg)
	}
	return main, nil
}

// ContainerChildPID is the process id of the child of the container's main process
// (ContainerPID) whose executable is named exe: the server a supervising PID 1 runs.
func (ns *Nodes) ContainerChildPID(pod *corev1.Pod, container, exe string) (int, error) {
	main, err := ns.ContainerPID(pod, container)
	if err != nil {
		return 0, err
	}
	cg, err := ns.containerCgroup(pod, container)
	if err != nil {
		return 0, err
	}
	for _, p := range cgroupPids(cg) {
		ppid, _, ok := parentAndStart(p)
		if !ok || ppid != main {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(p), "exe")); err == nil && filepath.Base(target) == exe {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no child %s of process %d in %s", exe, main, cg)
}

// parentAndStart is a process's parent and its start time in clock ticks since boot.
func parentAndStart(pid int) (ppid int, started uint64, ok bool) {
	f := procStat(pid)
	// After the command: state(0) ppid(1) ... starttime(19).
	if len(f) < 20 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	started, err2 := strconv.ParseUint(f[19], 10, 64)
	return ppid, started, err1 == nil && err2 == nil
}

// ProcessState is pid's state letter in /proc (R running, S sleeping, T stopped, ...), or
// "" when it is gone.
func ProcessState(pid int) string {
	if f := procStat(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

// procStat is the fields of /proc/<pid>/stat after the command's name (which may hold
// spaces and parentheses): state, ppid, ...; nil when the process is gone.
func procStat(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// podCgroup is the cgroup holding every container of pod, its sandbox included.
func (ns *Nodes) podCgroup(pod *corev1.Pod) (string, error) {
	n, err := ns.nodeOf(pod)
	if err != nil {
		return "", err
	}
	cg, ok := findCgroup(n.cgroupRoot, "pod"+string(pod.UID))
	if !ok {
		return "", fmt.Errorf("pod %s/%s has no cgroup on %s", pod.Namespace, pod.Name, n.Name)
	}
	return cg, nil
}

// StopPod stops every process of pod with SIGSTOP, as when its workload hangs. The kubelet
// still sees the container running; its probes time out.
//
// A runc process setting up an exec (a probe) in the pod's cgroup is left running: it
// belongs to the runtime, not to the workload, and stopped it would hold the exec, and so
// the kubelet's probe worker, for the whole runtime request timeout (2 minutes).
func (ns *Nodes) StopPod(pod *corev1.Pod) error {
	cg, err := ns.podCgroup(pod)
	if err != nil {
		return err
	}
	for _, pid := range cgroupPids(cg) {
		if !isRuncProcess(pid) {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
	}
	return nil
}

// isRuncProcess says whether pid is runc's (its init, "runc:[2:INIT]", before it executes the
// container's command).
func isRuncProcess(pid int) bool {
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	return err == nil && strings.HasPrefix(string(comm), "runc")
}

// ContinuePod continues the processes StopPod stopped (of the pod with pod's UID).
func (ns *Nodes) ContinuePod(pod *corev1.Pod) error {
	cg, err := ns.podCgroup(pod)
	if err != nil {
		return err
	}
	signalCgroup(cg, syscall.SIGCONT)
	return nil
}

// LoseNode stops node name's kubelet, containerd, shims and every process of its pods
// with SIGSTOP, together: to the cluster the node stops reporting and its pods stop
// answering, as when a machine hangs. RestoreNode undoes it.
func (ns *Nodes) LoseNode(name string) error {
	return ns.signalNode(name, syscall.SIGSTOP)
}

// RestoreNode continues what LoseNode stopped.
func (ns *Nodes) RestoreNode(name string) error {
	return ns.signalNode(name, syscall.SIGCONT)
}

func (ns *Nodes) signalNode(name string, sig syscall.Signal) error {
	n := ns.Node(name)
	if n == nil {
		return fmt.Errorf("no node %q", name)
	}
	n.signal(sig)
	return nil
}

// signal sends sig to the node's kubelet, containerd, shims and pods' processes, and
// remembers whether they are stopped.
func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	var pids []int
	for _, p := range []*localcluster.Process{n.kubelet, n.containerd} {
		if p != nil {
			pids = append(pids, p.Pid())
		}
	}
	n.lost = sig == syscall.SIGSTOP
	n.mu.Unlock()
	pids = append(pids, n.shimPids()...)
	pids = append(pids, cgroupPids(n.cgroupRoot)...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
}
