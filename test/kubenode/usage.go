package kubenode

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUTime is the CPU time the nodes have used so far, by part: "kubelet" (every
// node's), "containerd" (with the shims and the runc commands they ran: container
// starts, exec probes), "kube-proxy", and "pods" (every process in the nodes' pods:
// PostgreSQL, its backends, and what exec probes run in the containers).
func (ns *Nodes) CPUTime() map[string]time.Duration {
	out := map[string]time.Duration{}
	ns.proxyMu.Lock()
	if ns.proxy != nil {
		out["kube-proxy"] = processCPU(ns.proxy.Pid())
	}
	ns.proxyMu.Unlock()
	for _, n := range ns.Nodes {
		n.mu.Lock()
		kubelet, containerd := n.kubelet, n.containerd
		n.mu.Unlock()
		if kubelet != nil {
			out["kubelet"] += processCPU(kubelet.Pid())
		}
		if containerd != nil {
			out["containerd"] += processCPU(containerd.Pid())
		}
		for _, pid := range n.shimPids() {
			out["containerd"] += processCPU(pid)
		}
		out["pods"] += cgroupCPU(n.cgroupRoot)
	}
	return out
}

// processCPU is a process's user and system time with its reaped children's.
func processCPU(pid int) time.Duration {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	var total time.Duration
	for _, v := range f[11:15] { // utime stime cutime cstime
		t, _ := strconv.ParseInt(v, 10, 64)
		total += time.Duration(t) * time.Second / 100 // USER_HZ
	}
	return total
}

// cgroupCPU is the CPU time of every process that ever ran in the cgroup tree at rel.
func cgroupCPU(rel string) time.Duration {
	if cgroupV2() {
		b, err := os.ReadFile(filepath.Join(cgroupMount, rel, "cpu.stat"))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				us, _ := strconv.ParseInt(v, 10, 64)
				return time.Duration(us) * time.Microsecond
			}
		}
		return 0
	}
	b, err := os.ReadFile(filepath.Join(cgroupMount, "cpuacct", rel, "cpuacct.usage"))
	if err != nil {
		return 0
	}
	ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(ns)
}
