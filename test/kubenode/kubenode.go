// Package kubenode runs real Kubernetes nodes on this machine for the local control plane
// (test/localcluster): per node a kubelet and a containerd of its own, running pods with
// runc from images imported offline, networked by the CNI bridge plugin, with Services
// by one kube-proxy and volumes by a local-path provisioner. Pods and Services get
// addresses from 198.18.0.0/15 only, and nothing is sent off the machine.
//
// It needs root, cgroups (v1 or v2), iptables and the binaries hack/install-node.sh
// installs. A typical TestMain:
//
//	nodes, err := kubenode.Reserve(kubenode.Options{Count: 2, RootDir: dir})
//	c, err := localcluster.Start(ctx, nodes.ClusterOptions(localcluster.Options{...}))
//	err = nodes.Start(ctx, c)
//	defer nodes.Stop()
//
// One machine runs one set of nodes at a time: kube-proxy's iptables chains are the
// host's, so two kube-proxies would remove each other's rules.
package kubenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pgops/pgops/test/localcluster"
)

// Versions and images hack/install-node.sh provides; keep in sync with hack/versions.sh.
const (
	ContainerdVersion = "v2.4.2"
	// PostgresImage is the PostgreSQL image built from Debian's packages. Debian has only
	// PostgreSQL 15, so its tag is the major version: a provisioner maps spec.version to
	// it with --image-registry=pgops.local/postgres --image-tag-template={{.Major}}, and
	// a Postgres asking for another major gets an image no node has.
	PostgresImage = "pgops.local/postgres:15"
	// PostgresImageRegistry and PostgresImageTagTemplate are those provisioner flags.
	PostgresImageRegistry    = "pgops.local/postgres"
	PostgresImageTagTemplate = "{{.Major}}"
	// SandboxImage is the pod sandbox (pause) image, built from hack/pause.
	SandboxImage = "pgops.local/pause:3.10"
	// VolumeProvisioner provisions the PVCs of the StorageClass the nodes want
	// (ClusterOptions): a directory on the node the pod is scheduled to, as a local
	// PersistentVolume bound to that node.
	VolumeProvisioner = "kubenode.pgops.dev/local-path"
)

// Options configure Reserve.
type Options struct {
	// Count is the number of nodes, 1 to MaxNodes. Default 1.
	Count int
	// RootDir holds the nodes' state, volumes and logs. Required.
	RootDir string
	// LogDir receives one log file per process. Default RootDir/logs.
	LogDir string
	// MaxPods is each kubelet's maxPods. Default 250.
	MaxPods int
	// Images are image archives (docker-save or OCI) every node imports. Default: the
	// PostgreSQL and sandbox images from hack/install-node.sh.
	Images []string
	// Progress, if set, receives one line per step.
	Progress io.Writer
	// StopGracePeriod is how long Stop waits after SIGTERM before SIGKILL, per process.
	// Default 10 seconds.
	StopGracePeriod time.Duration
}

// Nodes is a set of real nodes sharing one network.
type Nodes struct {
	opts    Options
	net     *network
	bins    binaries
	proxyMu sync.Mutex
	proxy   *localcluster.Process
	proxyLk *os.File
	cancel  context.CancelFunc
	done    chan struct{}

	// Nodes in order; Nodes[0] also runs kube-proxy.
	Nodes []*Node

	stopOnce sync.Once
}

// binaries the nodes run.
type binaries struct {
	kubelet, kubeProxy, containerd, shim, ctr, runc, cniDir string
}

// CacheDir is where hack/install-node.sh puts containerd and the images.
func CacheDir() string { return localcluster.CacheDir() }

// ContainerdBinDir holds containerd, its runc shim and ctr.
func ContainerdBinDir() string {
	return filepath.Join(CacheDir(), "containerd-"+ContainerdVersion, "bin")
}

// ImageDir holds the image archives hack/install-node.sh builds.
func ImageDir() string { return filepath.Join(CacheDir(), "node-images") }

// DefaultImages are the archives of PostgresImage and SandboxImage.
func DefaultImages() []string {
	return []string{filepath.Join(ImageDir(), "postgres-15.tar"), filepath.Join(ImageDir(), "pause.tar")}
}

// findBinaries locates everything the nodes run, or says what is missing and how to get it.
func findBinaries() (binaries, error) {
	k8s := localcluster.DefaultBinDir()
	cd := ContainerdBinDir()
	b := binaries{
		kubelet:    filepath.Join(k8s, "kubelet"),
		kubeProxy:  filepath.Join(k8s, "kube-proxy"),
		containerd: filepath.Join(cd, "containerd"),
		shim:       filepath.Join(cd, "containerd-shim-runc-v2"),
		ctr:        filepath.Join(cd, "ctr"),
		cniDir:     "/usr/lib/cni",
	}
	var missing []string
	for _, p := range []string{b.kubelet, b.kubeProxy, b.containerd, b.shim, b.ctr, filepath.Join(b.cniDir, "bridge"), filepath.Join(b.cniDir, "host-local"), filepath.Join(b.cniDir, "loopback")} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			missing = append(missing, p)
		}
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		missing = append(missing, "runc")
	}
	b.runc = runc
	for _, tool := range []string{"iptables", "ip", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("kubenode: missing %s; run hack/install-node.sh (or make tools)", strings.Join(missing, ", "))
	}
	return b, nil
}

// Reserve checks the binaries and images, and claims a network and the machine's
// kube-proxy for the nodes. Start them once the control plane runs.
func Reserve(opts Options) (*Nodes, error) {
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	if opts.RootDir == "" {
		return nil, errors.New("kubenode: Options.RootDir is required")
	}
	if opts.Count == 0 {
		opts.Count = 1
	}
	if opts.Count < 1 || opts.Count > MaxNodes {
		return nil, fmt.Errorf("kubenode: Count %d is not within 1..%d", opts.Count, MaxNodes)
	}
	if opts.LogDir == "" {
		opts.LogDir = filepath.Join(opts.RootDir, "logs")
	}
	if opts.MaxPods == 0 {
		opts.MaxPods = 250
	}
	if opts.Images == nil {
		opts.Images = DefaultImages()
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.StopGracePeriod == 0 {
		opts.StopGracePeriod = 10 * time.Second
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	for _, img := range opts.Images {
		if _, err := os.Stat(img); err != nil {
			return nil, fmt.Errorf("kubenode: image archive %s: %w; run hack/install-node.sh (or make tools)", img, err)
		}
	}
	lk, err := lockProxy()
	if err != nil {
		return nil, err
	}
	nw, err := reserveNetwork()
	if err != nil {
		lk.Close()
		return nil, err
	}
	ns := &Nodes{opts: opts, net: nw, bins: bins, proxyLk: lk}
	for i := 0; i < opts.Count; i++ {
		ns.Nodes = append(ns.Nodes, &Node{
			Name:       fmt.Sprintf("pgops-node-%d", i),
			IP:         nw.nodeIP(i).String(),
			PodCIDR:    nw.nodePodCIDR(i).String(),
			index:      i,
			dir:        filepath.Join(opts.RootDir, fmt.Sprintf("node-%d", i)),
			bridge:     nw.bridge(i),
			cgroupRoot: nw.cgroupRoot(i),
			logDir:     opts.LogDir,
			bins:       bins,
		})
	}
	return ns, nil
}

// lockProxy takes the machine's kube-proxy lock.
func lockProxy() (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(lockDir, "pgops-kubenode-proxy.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("kubenode: another set of real nodes runs on this machine (a make demo or make test?); " +
			"kube-proxy's iptables rules are the host's, so one set runs at a time")
	}
	return f, nil
}

// Names are the nodes' names, for localcluster.Options.RealNodes.
func (ns *Nodes) Names() []string {
	var names []string
	for _, n := range ns.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// ServiceCIDR is the Service range of the nodes' network.
func (ns *Nodes) ServiceCIDR() string { return ns.net.serviceCIDR.String() }

// PodCIDR is the range of all the nodes' pods.
func (ns *Nodes) PodCIDR() string { return ns.net.podCIDR.String() }

// ClusterOptions are o with what the control plane needs for these nodes.
func (ns *Nodes) ClusterOptions(o localcluster.Options) localcluster.Options {
	o.RealNodes = ns.Names()
	o.ServiceCIDR = ns.ServiceCIDR()
	o.PodCIDR = ns.PodCIDR()
	o.VolumeProvisioner = VolumeProvisioner
	o.VolumeBindingMode = storagev1.VolumeBindingWaitForFirstConsumer
	return o
}

func (ns *Nodes) progress(format string, args ...any) {
	fmt.Fprintf(ns.opts.Progress, format+"\n", args...)
}

// Start brings the nodes up and returns once every one is Ready. On error everything
// started so far is stopped.
func (ns *Nodes) Start(ctx context.Context, c *localcluster.Cluster) (err error) {
	defer func() {
		if err != nil {
			ns.Stop()
		}
	}()
	began := time.Now()
	if err := ns.net.setUp(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	ns.cancel = cancel
	ns.done = make(chan struct{})
	go func() {
		defer close(ns.done)
		runVolumeProvisioner(runCtx, c.Client(), ns)
	}()

	var wg sync.WaitGroup
	errs := make([]error, len(ns.Nodes))
	for i, n := range ns.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ns.startNode(ctx, c, n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := ns.startProxy(ctx, c); err != nil {
		return err
	}
	if err := ns.waitReady(ctx, c); err != nil {
		return err
	}
	ns.progress("%d real node(s) ready in %s", len(ns.Nodes), time.Since(began).Round(100*time.Millisecond))
	return nil
}

func (ns *Nodes) startNode(ctx context.Context, c *localcluster.Cluster, n *Node) error {
	for _, d := range []string{n.dir, n.logDir, n.path("volumes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := ns.net.addNode(n.index); err != nil {
		return err
	}
	if err := makeCgroup(n.cgroupRoot); err != nil {
		return fmt.Errorf("cgroup %s: %w", n.cgroupRoot, err)
	}
	if err := n.writeContainerdConfig(SandboxImage); err != nil {
		return err
	}
	if err := n.startContainerd(ctx, ns.opts.Images); err != nil {
		return err
	}
	ns.progress("containerd of %s up, images imported", n.Name)
	// Picked after containerd has taken its stream server's port.
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	n.healthPort = ports[0]
	if err := n.writeKubeletConfig(c.KubeletClientCAFile(), ns.net.clusterDNS().String(), ns.opts.MaxPods); err != nil {
		return err
	}
	if err := n.startKubelet(ctx, c.NodeKubeconfig(n.Name)); err != nil {
		return err
	}
	ns.progress("kubelet of %s up (%s, pods %s)", n.Name, n.IP, n.PodCIDR)
	return nil
}

// startProxy runs kube-proxy in iptables mode for the whole machine: the nodes share the
// host's network namespace.
func (ns *Nodes) startProxy(ctx context.Context, c *localcluster.Cluster) error {
	// Picked right before the start: containerd's stream servers take ports of the same
	// range as they start.
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	healthPort, metricsPort := ports[0], ports[1]
	dir := filepath.Join(ns.opts.RootDir, "kube-proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]q
hostnameOverride: %[2]s
mode: iptables
clusterCIDR: %[3]s
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:%[4]d
metricsBindAddress: 127.0.0.1:%[5]d
# NodePorts only on the nodes' own addresses, never the machine's others.
nodePortAddresses: [%[3]s]
iptables:
  localhostNodePorts: false
# The machine's conntrack settings are left as they are.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.KubeProxyKubeconfig(), ns.Nodes[0].Name, ns.net.podCIDR, healthPort, metricsPort)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := localcluster.StartProcess("kube-proxy", ns.bins.kubeProxy, []string{"--config=" + filepath.Join(dir, "config.yaml"), "--v=1"}, ns.opts.LogDir, nil)
	if err != nil {
		return err
	}
	ns.proxyMu.Lock()
	ns.proxy = p
	ns.proxyMu.Unlock()
	url := fmt.Sprintf("http://127.0.0.1:%d/livez", healthPort)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return p.WaitFor(ctx, "kube-proxy", func(ctx context.Context) (bool, error) {
		return httpOK(ctx, url)
	})
}

// waitReady waits until every node is Ready; on timeout it says which is not, and why.
func (ns *Nodes) waitReady(ctx context.Context, c *localcluster.Cluster) error {
	notReady := ""
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range ns.Nodes {
			node, err := c.Client().CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				notReady = fmt.Sprintf("node %s: %v", n.Name, err)
				return false, nil
			}
			notReady = fmt.Sprintf("node %s has no Ready condition", n.Name)
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					notReady = fmt.Sprintf("node %s: Ready=%s %s: %s", n.Name, cond.Status, cond.Reason, cond.Message)
					if cond.Status != corev1.ConditionTrue {
						return false, nil
					}
					notReady = ""
				}
			}
			if notReady != "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the nodes to be Ready: %w (%s)", err, notReady)
	}
	return nil
}

// Stop stops kube-proxy (removing its rules), every node and the volume provisioner, and
// releases the network. Volumes stay in RootDir. It is idempotent.
func (ns *Nodes) Stop() {
	ns.stopOnce.Do(func() {
		if ns.cancel != nil {
			ns.cancel()
			<-ns.done
		}
		ns.proxyMu.Lock()
		proxy := ns.proxy
		ns.proxyMu.Unlock()
		if proxy != nil {
			proxy.Stop(ns.opts.StopGracePeriod)
		}
		// kube-proxy leaves its chains; --cleanup removes them.
		if out, err := exec.Command(ns.bins.kubeProxy, "--cleanup").CombinedOutput(); err != nil {
			ns.progress("kube-proxy --cleanup: %v: %s", err, out)
		}
		var wg sync.WaitGroup
		for _, n := range ns.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.stop(ns.opts.StopGracePeriod)
			}()
		}
		wg.Wait()
		ns.net.release()
		ns.proxyLk.Close()
	})
}

// Node returns the node named name, or nil.
func (ns *Nodes) Node(name string) *Node {
	for _, n := range ns.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
