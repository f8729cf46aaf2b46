package kubenode

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgops/pgops/test/localcluster"
)

// Node is one node: a containerd and a kubelet of its own, with their own directories,
// ports, bridge and cgroup parent.
type Node struct {
	// Name is the Node's name.
	Name string
	// IP is the node's InternalIP, on its bridge; PodCIDR the range its pods get.
	IP      string
	PodCIDR string

	index      int
	dir        string
	bridge     string
	cgroupRoot string
	logDir     string
	bins       binaries
	healthPort int

	mu         sync.Mutex
	containerd *localcluster.Process
	kubelet    *localcluster.Process
	lost       bool
}

func (n *Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.dir}, elem...)...)
}

func (n *Node) containerdSocket() string { return n.path("containerd.sock") }

// writeContainerdConfig is containerd's configuration: its own root, state and socket;
// the CRI plugin with runc and the CNI bridge; and nothing that reaches off the machine.
func (n *Node) writeContainerdConfig(sandboxImage string) error {
	cfg := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[metrics]
  address = ""

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[5]q
  [plugins.'io.containerd.cri.v1.images'.registry]
    # Every registry resolves to a closed local port: images come only from imports, and
    # a pull fails at once instead of looking a registry up off the machine.
    config_path = %[6]q

[plugins.'io.containerd.cri.v1.runtime']
  # The kubelet asks for negative OOM score adjustments (-998 for the sandbox); lowering a
  # score needs CAP_SYS_RESOURCE, which these machines do not give even to root. Scores
  # are then kept no lower than containerd's own, which is what containerd offers for
  # exactly this case.
  restrict_oom_score_adj = true
  # Pods' network namespaces live under the node's state, so a node cleans up its own.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[7]q
        Root = %[8]q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[9]q]
    conf_dir = %[10]q

[plugins.'io.containerd.grpc.v1.cri']
  # exec, attach and port-forward streams; the kubelet proxies them.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, n.path("containerd", "root"), n.path("containerd", "state"), n.containerdSocket(), n.containerdSocket()+".ttrpc",
		sandboxImage, n.path("registry-hosts"), n.bins.runc, n.path("runc"), n.bins.cniDir, n.path("cni"))
	hosts := `# Images are imported; no registry is ever contacted.
server = "http://127.0.0.1:9"

[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
`
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %[1]q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %[2]q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %[3]q, "gateway": %[4]q}]],
        "routes": [{"dst": %[5]q}],
        "dataDir": %[6]q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, "pgops-"+n.Name, n.bridge, n.PodCIDR, n.IP, "0.0.0.0/0", n.path("cni-ipam"))
	files := map[string]string{
		n.path("containerd.toml"):                          cfg,
		n.path("registry-hosts", "_default", "hosts.toml"): hosts,
		n.path("cni", "10-pgops.conflist"):                 cni,
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeletConfig is the kubelet's configuration: the machine's real capacity, pods in
// the node's cgroup parent, the API server authenticating and authorizing every request
// to the kubelet, and nothing that reaches off the machine.
func (n *Node) writeKubeletConfig(clientCA, clusterDNS string, maxPods int) error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines have the cgroup v1 hierarchy; kubelet v1.35 and later refuse it unless
# told otherwise (KEP-5573).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]q}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[5]s
clusterDNS: [%[6]s]
clusterDomain: cluster.local
# The host's resolv.conf names resolvers off the machine; pods get none of them.
resolvConf: %[7]q
maxPods: %[8]d
# The evictions and image garbage collection a real node has would act on the machine's
# shared disk, which these tests do not own.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enforceNodeAllocatable: ["pods"]
serializeImagePulls: false
# Each node's own: a kubelet's garbage collection deletes the log directories of every pod
# it does not run, so in the shared /var/log/pods each node would delete the other's logs.
podLogsDir: %[9]q
`, n.cgroupRoot, n.IP, n.healthPort, clientCA, n.containerdSocket(), clusterDNS, n.path("resolv.conf"), maxPods, n.path("pod-logs"))
	if err := os.WriteFile(n.path("resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	return os.WriteFile(n.path("kubelet.yaml"), []byte(cfg), 0o644)
}

// startContainerd starts containerd, waits for its socket and imports the images.
func (n *Node) startContainerd(ctx context.Context, images []string) error {
	p, err := localcluster.StartProcess("containerd-"+n.Name, n.bins.containerd,
		[]string{"--config", n.path("containerd.toml"), "--log-level", "warn"}, n.logDir, n.env())
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.containerd = p
	n.mu.Unlock()
	if err := p.WaitFor(ctx, "containerd of "+n.Name, func(ctx context.Context) (bool, error) {
		err := n.ctr(ctx, "version")
		return err == nil, err
	}); err != nil {
		return err
	}
	for _, img := range images {
		if err := n.ctr(ctx, "images", "import", "--no-unpack=false", img); err != nil {
			return fmt.Errorf("import %s into %s: %w", img, n.Name, err)
		}
	}
	return nil
}

// env is the environment of containerd: its shim and runc must be found on PATH.
func (n *Node) env() []string {
	return append(os.Environ(), "PATH="+filepath.Dir(n.bins.shim)+":"+os.Getenv("PATH"))
}

// ctr runs containerd's client in the kubelet's namespace.
func (n *Node) ctr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, n.bins.ctr, append([]string{"--address", n.containerdSocket(), "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startKubelet starts the kubelet and waits for its health endpoint.
func (n *Node) startKubelet(ctx context.Context, kubeconfig string) error {
	p, err := localcluster.StartProcess("kubelet-"+n.Name, n.bins.kubelet, []string{
		"--config=" + n.path("kubelet.yaml"),
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + n.path("kubelet"),
		"--cert-dir=" + n.path("kubelet", "pki"),
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP,
		"--v=1",
	}, n.logDir, n.env())
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	url := "http://127.0.0.1:" + strconv.Itoa(n.healthPort) + "/healthz"
	return p.WaitFor(ctx, "kubelet of "+n.Name, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, url)
	})
}

// httpOK reports whether a GET of url answers 200.
func httpOK(ctx context.Context, url string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// stop stops the kubelet, then containerd, then kills whatever still runs in the node's
// pods (containers outlive both), and removes the node's cgroups and mounts.
func (n *Node) stop(grace time.Duration) {
	n.mu.Lock()
	kubelet, containerd, lost := n.kubelet, n.containerd, n.lost
	n.mu.Unlock()
	if lost {
		n.signal(syscall.SIGCONT) // stopped processes would ignore SIGTERM for the whole grace
	}
	if kubelet != nil {
		kubelet.Stop(grace)
	}
	if containerd != nil {
		containerd.Stop(grace)
	}
	n.killShims()
	killCgroup(n.cgroupRoot)
	_ = removeCgroup(n.cgroupRoot)
	unmountUnder(n.dir)
	removeLogLinksInto(n.dir)
}

// containerLogLinks is where every kubelet links its containers' logs (a fixed path, unlike
// podLogsDir), for log collectors that read one directory.
const containerLogLinks = "/var/log/containers"

// removeLogLinksInto removes the kubelet's links in containerLogLinks into dir: the machine
// is not the nodes', and a kubelet removes only the links of containers it still knows.
func removeLogLinksInto(dir string) {
	links, _ := filepath.Glob(filepath.Join(containerLogLinks, "*.log"))
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			_ = os.Remove(l)
		}
	}
}

// killShims kills the node's containerd shims: they run outside the pods' cgroups and
// outlive containerd.
func (n *Node) killShims() {
	for _, pid := range shimPids(n.containerdSocket()) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// shimPids are the node's containerd shims.
func (n *Node) shimPids() []int { return shimPids(n.containerdSocket()) }

// killShimsUnder kills the shims of every containerd whose socket is under dir.
func killShimsUnder(dir string) {
	for _, pid := range shimPids(filepath.Clean(dir) + "/") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// shimPids are the containerd shims whose containerd's socket path (on their command line)
// starts with socket.
func shimPids(socket string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && strings.HasPrefix(args[i+1], socket) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// unmountUnder lazily unmounts every mount below dir, deepest first (volumes, network
// namespaces, overlay root file systems), so the directory can be removed.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}
