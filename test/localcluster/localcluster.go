// Package localcluster runs a real Kubernetes control plane on this machine for
// integration tests and demos: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler as local processes, and kwok as a fake kubelet so pods become
// Running/Ready (with pod IPs 127.2.x.y, loopback addresses a local process can listen
// on) and PVCs of the default StorageClass "standard" get bound.
//
// The binaries come from hack/install-k8s-bins.sh (K8S_BIN_DIR). A typical TestMain:
//
//	c, err := localcluster.Start(ctx, localcluster.Options{})
//	if err != nil { ... }
//	code := m.Run()
//	c.Stop()
//	os.Exit(code)
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pgops/pgops/hack/kwok"
)

// Versions of the binaries hack/install-k8s-bins.sh builds; keep in sync with
// hack/versions.sh (TestVersionsMatchHack checks). They only name the default BinDir.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.6.16"
	KwokVersion = "v0.8.0"
)

// Defaults of Options.
const (
	DefaultServiceCIDR = "127.1.0.0/16"
	DefaultPodCIDR     = "127.2.0.0/16"
	DefaultNodeName    = "pgops-node-0"
	// StorageClassName is the default StorageClass the cluster offers. kind clusters
	// call theirs "standard", and KubeDB's guides ask for it by that name.
	StorageClassName = "standard"
)

// Binaries Start needs in Options.BinDir.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}

// Options configure Start. The zero value is a working single-node cluster.
type Options struct {
	// BinDir holds the control-plane binaries. Default: $K8S_BIN_DIR, else the cache
	// directory hack/versions.sh computes.
	BinDir string
	// WorkDir receives etcd data, keys, kubeconfig and logs. Default: a fresh temp dir.
	// An existing WorkDir is reused: the entries Start owns in it are replaced.
	WorkDir string
	// KeepWorkDir keeps WorkDir (logs, kubeconfig, etcd data) after Stop.
	KeepWorkDir bool
	// LogDir receives one log file per component. Default: WorkDir/logs.
	LogDir string
	// Progress, if set, receives one line per startup and teardown step.
	Progress io.Writer
	// ServiceCIDR is the Service ClusterIP range. Default 127.1.0.0/16, addresses a
	// local process can listen on.
	ServiceCIDR string
	// PodCIDR is the range kwok gives pod IPs from. Default 127.2.0.0/16. Two clusters
	// running at once hand out the same pod IPs unless given different ranges.
	PodCIDR string
	// NodeName is the name of the one fake Node. Default pgops-node-0.
	NodeName string
	// SkipFakeNode starts the cluster without kwok's fake Node, so the scheduler places
	// pods only on nodes someone else registers. kwok still runs (unless RealNodes): it
	// binds the PVCs of StorageClass "standard". Cluster.NodeName is then empty.
	SkipFakeNode bool
	// RealNodes names the nodes whose real kubelets will join (test/kubenode). The API
	// server then gets a token for each kubelet and one for kube-proxy
	// (NodeKubeconfig, KubeProxyKubeconfig), authorizes nodes with the Node authorizer
	// and NodeRestriction, reaches kubelets at their InternalIP with a client
	// certificate they trust (KubeletClientCAFile), and the controllers real nodes need
	// run: endpoint slices (kube-proxy reads them) and node lifecycle (a node that stops
	// reporting turns NotReady and its pods are evicted). kwok is not started. Implies
	// SkipFakeNode.
	RealNodes []string
	// VolumeProvisioner is the provisioner of the default StorageClass "standard", and
	// VolumeBindingMode its binding mode. Default: kwok's fake provisioner, Immediate.
	VolumeProvisioner string
	VolumeBindingMode storagev1.VolumeBindingMode
	// StartTimeout bounds Start when ctx has no earlier deadline. Default 3 minutes.
	StartTimeout time.Duration
	// StopGracePeriod is how long Stop waits after SIGTERM before SIGKILL, per
	// component. Default 10 seconds.
	StopGracePeriod time.Duration
}

// Cluster is a running local control plane. Stop it when done.
type Cluster struct {
	// WorkDir is the directory holding the cluster's files.
	WorkDir string
	// Kubeconfig is the path of an admin kubeconfig (system:masters).
	Kubeconfig string
	// KubectlPath is the kubectl binary matching the apiserver.
	KubectlPath string
	// LogDir holds one <component>.log per process.
	LogDir string
	// NodeName is the fake Node pods are scheduled to; empty with Options.SkipFakeNode.
	NodeName string
	// Server is the apiserver URL, https://127.0.0.1:<port>.
	Server string

	opts        Options
	ownsWorkDir bool
	adminConfig *rest.Config
	client      kubernetes.Interface

	mu    sync.Mutex
	procs map[string]*Process

	stopOnce sync.Once
	stopErr  error
}

// Component names; also the log file names.
const (
	compEtcd      = "etcd"
	compAPIServer = "kube-apiserver"
	compKCM       = "kube-controller-manager"
	compScheduler = "kube-scheduler"
	compKwok      = "kwok"
)

// CacheDir is where hack/ scripts build tools, computed like hack/versions.sh: $PGOPS_CACHE,
// else $XDG_CACHE_HOME/pgops, else ~/.cache/pgops.
func CacheDir() string {
	if d := os.Getenv("PGOPS_CACHE"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "pgops")
}

// DefaultBinDir is where hack/install-k8s-bins.sh puts the binaries, computed like
// hack/versions.sh: $K8S_BIN_DIR, else CacheDir() plus
// k8s-<kube>-etcd-<etcd>-kwok-<kwok>/bin.
func DefaultBinDir() string {
	if d := os.Getenv("K8S_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(CacheDir(), fmt.Sprintf("k8s-%s-etcd-%s-kwok-%s", KubeVersion, EtcdVersion, KwokVersion), "bin")
}

// CheckBinaries returns an error naming the missing binaries in binDir, and how to
// build them, or nil if all are there.
func CheckBinaries(binDir string) error {
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(binDir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("control-plane binaries missing in %s: %s; run hack/install-k8s-bins.sh (or make tools) to build them",
		binDir, strings.Join(missing, ", "))
}

// Start brings up etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kwok, a Ready fake Node, the default StorageClass "standard", and returns once the
// "default" ServiceAccount of namespace default exists (so pods can be created). On
// error everything started so far is torn down again.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts = withDefaults(opts)
	if err := CheckBinaries(opts.BinDir); err != nil {
		return nil, err
	}
	nodeName := opts.NodeName
	if opts.SkipFakeNode || len(opts.RealNodes) > 0 {
		nodeName = ""
	}
	c := &Cluster{
		opts:        opts,
		WorkDir:     opts.WorkDir,
		LogDir:      opts.LogDir,
		NodeName:    nodeName,
		KubectlPath: filepath.Join(opts.BinDir, "kubectl"),
		procs:       map[string]*Process{},
	}
	if err := c.prepareWorkDir(); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	began := time.Now()
	if err := c.start(ctx); err != nil {
		// Keep the logs for a post-mortem; only etcd's data (large preallocated WAL
		// files) goes.
		c.opts.KeepWorkDir = true
		stopErr := c.Stop()
		_ = os.RemoveAll(c.path("etcd"))
		return nil, errors.Join(fmt.Errorf("start local cluster (logs in %s): %w", c.LogDir, err), stopErr)
	}
	c.progress("local cluster ready in %s: KUBECONFIG=%s", time.Since(began).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

func withDefaults(o Options) Options {
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir()
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	if o.PodCIDR == "" {
		o.PodCIDR = DefaultPodCIDR
	}
	if o.NodeName == "" {
		o.NodeName = DefaultNodeName
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.StopGracePeriod == 0 {
		o.StopGracePeriod = 10 * time.Second
	}
	if o.VolumeProvisioner == "" {
		o.VolumeProvisioner = kwok.VolumeProvisioner
	}
	if o.VolumeBindingMode == "" {
		o.VolumeBindingMode = storagev1.VolumeBindingImmediate
	}
	if len(o.RealNodes) > 0 {
		o.SkipFakeNode = true
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Paths inside WorkDir that Start creates (and Stop removes).
var workDirEntries = []string{"etcd", "pki", "logs", "kubeconfig", "nodes", "tokens.csv", "stages.yaml", auditPolicyFile}

// prepareWorkDir creates WorkDir (a temp dir by default) and clears what a previous
// run left in it, so etcd always starts empty.
func (c *Cluster) prepareWorkDir() error {
	if c.WorkDir == "" {
		d, err := os.MkdirTemp("", "pgops-localcluster-")
		if err != nil {
			return err
		}
		c.WorkDir, c.opts.WorkDir, c.ownsWorkDir = d, d, true
		c.Kubeconfig = filepath.Join(d, "kubeconfig")
	} else {
		abs, err := filepath.Abs(c.WorkDir)
		if err != nil {
			return err
		}
		c.WorkDir, c.opts.WorkDir = abs, abs
		c.Kubeconfig = filepath.Join(abs, "kubeconfig")
		for _, e := range workDirEntries {
			if err := os.RemoveAll(filepath.Join(abs, e)); err != nil {
				return err
			}
		}
	}
	if c.LogDir == "" {
		c.LogDir = filepath.Join(c.WorkDir, "logs")
		c.opts.LogDir = c.LogDir
	}
	for _, d := range []string{c.WorkDir, c.LogDir, c.path("pki")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// etcd insists on a private data directory.
	return os.MkdirAll(c.path("etcd"), 0o700)
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.WorkDir}, elem...)...)
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.BinDir, name) }

func (c *Cluster) progress(format string, args ...any) {
	fmt.Fprintf(c.opts.Progress, format+"\n", args...)
}

// AdminConfig returns a copy of the admin (system:masters) client configuration.
func (c *Cluster) AdminConfig() *rest.Config { return rest.CopyConfig(c.adminConfig) }

// Client returns an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Kubectl runs kubectl against the cluster as admin and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.KubectlPath, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Pids returns the process ids of the running components by name, for tests that
// check nothing outlives Stop.
func (c *Cluster) Pids() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[string]int{}
	for name, p := range c.procs {
		pids[name] = p.Pid()
	}
	return pids
}

// Stop tears the cluster down: kwok, scheduler and controller-manager, then the
// apiserver, then etcd - an apiserver whose etcd is gone ignores SIGTERM for 30s and
// more. Each gets SIGTERM, then SIGKILL after Options.StopGracePeriod. WorkDir is
// removed unless Options.KeepWorkDir. Stop is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(c.teardown)
	return c.stopErr
}

func (c *Cluster) teardown() {
	began := time.Now()
	c.stopAll(compKwok, compScheduler, compKCM)
	c.stopAll(compAPIServer)
	c.stopAll(compEtcd)
	if !c.opts.KeepWorkDir {
		c.stopErr = c.removeWorkDir()
	}
	c.progress("local cluster stopped in %s", time.Since(began).Round(100*time.Millisecond))
}

// stopAll stops the named components in parallel and waits for all of them.
func (c *Cluster) stopAll(names ...string) {
	var wg sync.WaitGroup
	for _, name := range names {
		c.mu.Lock()
		p := c.procs[name]
		c.mu.Unlock()
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop(c.opts.StopGracePeriod)
		}()
	}
	wg.Wait()
}

// removeWorkDir deletes a temp WorkDir entirely, but in a caller-chosen one only the
// entries Start created, so a mistaken --workdir $HOME loses nothing else.
func (c *Cluster) removeWorkDir() error {
	if c.WorkDir == "" {
		return nil
	}
	if c.ownsWorkDir {
		return os.RemoveAll(c.WorkDir)
	}
	var errs []error
	for _, e := range workDirEntries {
		errs = append(errs, os.RemoveAll(c.path(e)))
	}
	_ = os.Remove(c.WorkDir) // only if now empty
	return errors.Join(errs...)
}
