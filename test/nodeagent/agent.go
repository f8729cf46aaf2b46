// Package nodeagent is a node agent for tests and demos: a small kubelet that runs the
// pods scheduled to its Node as real local processes, plus a kube-proxy for Service
// ClusterIPs, so that the pods the provisioner's StatefulSets create run as real
// PostgreSQL servers and the operators reach them exactly as in a cluster.
//
// It lives in test/ and is never used by the operators. A typical wiring with
// test/localcluster:
//
//	network, _ := nodeagent.ReserveNetwork()
//	defer network.Release()
//	c, _ := localcluster.Start(ctx, localcluster.Options{
//		SkipFakeNode: true,
//		ServiceCIDR:  network.ServiceCIDR.String(),
//	})
//	agent, _ := nodeagent.Start(ctx, nodeagent.Options{Client: c.Client(), Network: network})
//	defer c.Stop()
//	defer agent.Stop()
//
// What it does for each pod with spec.nodeName == Options.NodeName:
//
//   - gives it a network namespace of its own on the pod network (Network: a bridge, a
//     veth per pod, addresses from 198.18.0.0/15), so its processes listen on any of its
//     addresses as in a cluster, and reports status through pods/status: phase,
//     conditions, podIP, hostIP (the bridge's address), container statuses with restart
//     counts;
//   - resolves each container's environment as the kubelet does (value, secretKeyRef,
//     configMapKeyRef, fieldRef, resourceFieldRef, envFrom, $(VAR) expansion, and the
//     service link variables <SVC>_SERVICE_HOST/_PORT... of the namespace's Services);
//   - prepares volumes: ConfigMap, Secret, projected (including the ServiceAccount
//     token), downward API, emptyDir (per pod, removed with it), hostPath, and
//     persistentVolumeClaim (a directory per claim UID under RootDir that outlives
//     pods, so a StatefulSet pod deleted and recreated finds its data again, and goes
//     when the claim is deleted);
//   - runs the command and args of each container (init containers first) as its
//     securityContext says (runAsUser, runAsGroup, fsGroup and supplementalGroups; the
//     RunAsUser OS user where neither the pod nor the container names a user, standing
//     in for the image's USER) in a private mount namespace, with the volumes
//     bind-mounted at their mountPaths and the root read-only if readOnlyRootFilesystem,
//     output to RootDir/logs/<namespace>_<pod>_<container>.log;
//   - runs readiness and liveness probes (exec inside the container's mount
//     namespace, httpGet, tcpSocket) at most every 2 seconds, restarts exited
//     containers per restartPolicy with a short backoff;
//   - on deletion, sends the container's stop signal to its process group (SIGINT,
//     PostgreSQL's fast shutdown, for images named postgres as the official image's
//     STOPSIGNAL says; else SIGTERM; lifecycle.stopSignal wins), SIGKILLs every process
//     of the container after the grace period (capped at 30s), and deletes the pod
//     object (grace 0, UID precondition), so a StatefulSet controller recreates it.
//
// The container image is ignored: the command runs on this machine, with the
// PostgreSQL binaries of PGBinDir first on PATH, so they stand in for every
// PostgreSQL version an image would have carried. Where the machine has no account for
// a container's uid, the container sees an /etc/passwd and /etc/group that name it, as
// the image's would (postgres for the official postgres images' 999): initdb and peer
// authentication look the user up. Volume directories belong to the pod's runAsUser
// (else RunAsUser) and its fsGroup. Mount points that do not exist are created on the host
// (e.g. /var/pv, /scripts, /var/run/secrets/kubernetes.io/serviceaccount): the
// namespace is private for mounts, not for the file system underneath.
//
// The agent needs root (mount namespaces, setpriv) and Linux.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/pgtest"
)

// DefaultNodeName is the Node an agent registers unless told otherwise.
const DefaultNodeName = "pgops-db-node"

// NodeLabel marks Nodes registered by an agent (value "true"), for node selectors.
const NodeLabel = "pgops.dev/node-agent"

// Options configure Start.
type Options struct {
	// Client talks to the API server; it needs to read pods, Secrets, ConfigMaps,
	// Services, EndpointSlices and PVCs, write Nodes, Leases, pods/status, delete pods
	// and create ServiceAccount tokens (admin in tests).
	Client kubernetes.Interface
	// NodeName is the Node the agent registers and runs the pods of. Default
	// DefaultNodeName.
	NodeName string
	// RootDir holds volume data and logs. Default: a fresh temp dir, removed by Stop
	// unless KeepRootDir. A given RootDir is never removed, so PVC data can outlive
	// the agent.
	RootDir string
	// KeepRootDir keeps a default (temporary) RootDir after Stop, for post-mortems.
	KeepRootDir bool
	// PGBinDir is put first on every container's PATH. Default: like pgtest.BinDir
	// ($PG_BINDIR, pg_config --bindir, the highest /usr/lib/postgresql/*/bin).
	PGBinDir string
	// RunAsUser is the OS user that runs a container whose securityContext names no
	// user, and owns the volumes of such pods (PostgreSQL refuses to run as root).
	// Default "postgres", created with useradd if missing.
	RunAsUser string
	// Network is the pod network: each pod gets a network namespace on it, with an
	// address from Network.PodCIDR. Its ServiceCIDR must be the cluster's Service range
	// for the service proxy to listen on ClusterIPs. Default: the agent reserves a
	// network of its own (ReserveNetwork) and releases it at Stop.
	Network *Network
	// DisableServiceProxy turns the kube-proxy part off (another agent of the same
	// cluster already listens on the ClusterIPs).
	DisableServiceProxy bool
	// Log receives one line per pod and container lifecycle step. Default: discarded.
	Log io.Writer
}

// Agent is a running node agent. Stop it when done.
type Agent struct {
	// NodeName is the Node it registered.
	NodeName string
	// RootDir holds volumes (volumes/pvc/<namespace>/<claim>_<uid>, pods/<uid>) and
	// logs (logs/<namespace>_<pod>_<container>.log).
	RootDir string
	// PodCIDR is the range of pod IPs.
	PodCIDR netip.Prefix
	// Network is the pod network.
	Network *Network

	client       kubernetes.Interface
	rootDir      string
	ownsRootDir  bool
	keepRootDir  bool
	pgBinDir     string
	uid, gid     int
	homeDir      string
	hostIP       string
	allocatable  corev1.ResourceList
	log          io.Writer
	logMu        sync.Mutex
	tools        tools
	ipam         *ipam
	ownsNetwork  bool
	disableProxy bool

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	factory informers.SharedInformerFactory
	// claims watches PVCs of all namespaces, to remove the data of deleted ones.
	claims informers.SharedInformerFactory
	proxy  *serviceProxy

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	// finished holds pods whose worker deleted them, so late events for them do not
	// start them again.
	finished map[types.UID]time.Time
	stopping bool

	stopOnce sync.Once
}

// tools are the absolute paths of the programs the agent runs.
type tools struct {
	unshare, nsenter, setpriv, mount, hostname string
}

func findTools() (tools, error) {
	var t tools
	var missing []string
	for _, x := range []struct {
		name     string
		dst      *string
		optional bool
	}{
		{"unshare", &t.unshare, false}, {"nsenter", &t.nsenter, false}, {"setpriv", &t.setpriv, false},
		{"mount", &t.mount, false}, {"hostname", &t.hostname, true},
	} {
		p, err := exec.LookPath(x.name)
		if err != nil {
			for _, d := range []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"} {
				if fi, err := os.Stat(filepath.Join(d, x.name)); err == nil && !fi.IsDir() {
					p = filepath.Join(d, x.name)
					break
				}
			}
		}
		if p == "" && !x.optional {
			missing = append(missing, x.name)
		}
		*x.dst = p
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("nodeagent needs %v (util-linux: apt-get install util-linux mount)", missing)
	}
	return t, nil
}

// Start registers the Node, starts watching its pods and the cluster's Services, and
// returns once the informers have synced. Stop undoes everything but the Node (left
// NotReady) and the pods' objects.
func Start(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Client == nil {
		return nil, errors.New("nodeagent: Options.Client is required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("nodeagent: must run as root (it makes mount namespaces and runs containers as RunAsUser)")
	}
	a := &Agent{
		client:   opts.Client,
		NodeName: opts.NodeName,
		log:      opts.Log,
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]time.Time{},
		allocatable: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("1000"),
		},
		keepRootDir:  opts.KeepRootDir,
		disableProxy: opts.DisableServiceProxy,
	}
	if a.NodeName == "" {
		a.NodeName = DefaultNodeName
	}
	if a.log == nil {
		a.log = io.Discard
	}
	var err error
	if a.tools, err = findTools(); err != nil {
		return nil, err
	}

	a.Network = opts.Network
	if a.Network == nil {
		if a.Network, err = ReserveNetwork(); err != nil {
			return nil, err
		}
		a.ownsNetwork = true
	}
	a.PodCIDR = a.Network.PodCIDR
	a.hostIP = a.Network.Gateway.String()
	a.ipam = newIPAM(a.PodCIDR, a.Network.Gateway)

	a.pgBinDir = opts.PGBinDir
	if a.pgBinDir == "" {
		if a.pgBinDir, err = pgtest.BinDir(); err != nil {
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
	}

	name := opts.RunAsUser
	if name == "" {
		name = "postgres"
	}
	u, err := lookupOrCreateUser(name)
	if err != nil {
		return nil, err
	}
	a.uid, _ = strconv.Atoi(u.Uid)
	a.gid, _ = strconv.Atoi(u.Gid)
	a.homeDir = u.HomeDir
	if a.uid == 0 {
		return nil, fmt.Errorf("nodeagent: RunAsUser %s is root; PostgreSQL refuses to run as root", name)
	}

	if opts.RootDir == "" {
		d, err := os.MkdirTemp("", "pgops-nodeagent-")
		if err != nil {
			return nil, err
		}
		a.rootDir, a.ownsRootDir = d, true
	} else {
		if a.rootDir, err = filepath.Abs(opts.RootDir); err != nil {
			return nil, err
		}
	}
	a.RootDir = a.rootDir
	for _, d := range []string{a.rootDir, filepath.Join(a.rootDir, "logs"), filepath.Join(a.rootDir, "pods"), filepath.Join(a.rootDir, "volumes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Others (RunAsUser) only need to traverse to nothing: every volume is bind-mounted
	// by root. 0755 keeps the logs readable for humans.
	_ = os.Chmod(a.rootDir, 0o755)

	a.ctx, a.cancel = context.WithCancel(context.Background())
	if err := a.start(ctx); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

func (a *Agent) start(ctx context.Context) error {
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.heartbeat()
	}()

	a.factory = informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.NodeName).String()
		}))
	podInformer := a.factory.Core().V1().Pods().Informer()
	_, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(obj) },
		UpdateFunc: func(_, obj any) { a.podChanged(obj) },
		DeleteFunc: func(obj any) { a.podDeleted(obj) },
	})
	if err != nil {
		return err
	}
	a.factory.Start(a.ctx.Done())

	a.claims = informers.NewSharedInformerFactory(a.client, 0)
	if _, err := a.claims.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: a.claimDeleted,
	}); err != nil {
		return err
	}
	a.claims.Start(a.ctx.Done())

	if !a.disableProxy {
		a.proxy = newServiceProxy(a)
		if err := a.proxy.start(); err != nil {
			return err
		}
	}
	for _, f := range []informers.SharedInformerFactory{a.factory, a.claims} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("nodeagent: informer for %v did not sync: %w", typ, ctx.Err())
			}
		}
	}
	if a.proxy != nil {
		if err := a.proxy.waitSynced(ctx); err != nil {
			return err
		}
	}
	a.logf("node %s ready: pod IPs from %s, root %s, PostgreSQL binaries from %s", a.NodeName, a.PodCIDR, a.rootDir, a.pgBinDir)
	return nil
}

func lookupOrCreateUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	out, cerr := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", name).CombinedOutput()
	if cerr != nil {
		return nil, fmt.Errorf("nodeagent: user %s does not exist and useradd failed: %v: %s", name, cerr, out)
	}
	return user.Lookup(name)
}

func (a *Agent) logf(format string, args ...any) {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	fmt.Fprintf(a.log, "%s nodeagent[%s]: %s\n", time.Now().Format("15:04:05.000"), a.NodeName, fmt.Sprintf(format, args...))
}

// LogPath is the file a container's output goes to (all its restarts, and all pods of
// that name, appended).
func (a *Agent) LogPath(namespace, pod, container string) string {
	return filepath.Join(a.rootDir, "logs", namespace+"_"+pod+"_"+container+".log")
}

// ClaimDir is the directory backing the PersistentVolumeClaim namespace/claim with
// the given UID.
func (a *Agent) ClaimDir(namespace, claim string, uid types.UID) string {
	return a.pvcDir(namespace, claim, string(uid))
}

// registerNode creates (or takes over) the Node and marks it Ready. It has no kwok
// annotation, so a kwok in the same cluster leaves it and its pods alone, and no
// taints.
func (a *Agent) registerNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: a.NodeName,
				Labels: map[string]string{
					"kubernetes.io/hostname": a.NodeName,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
					NodeLabel:                "true",
				},
			},
			Spec: corev1.NodeSpec{PodCIDR: a.PodCIDR.String(), PodCIDRs: []string{a.PodCIDR.String()}},
		}
		if node, err = nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("nodeagent: create Node %s: %w", a.NodeName, err)
		}
	case err != nil:
		return fmt.Errorf("nodeagent: get Node %s: %w", a.NodeName, err)
	default:
		if node.Annotations["kwok.x-k8s.io/node"] != "" {
			return fmt.Errorf("nodeagent: Node %s is managed by kwok; pick another NodeName", a.NodeName)
		}
	}
	// No taints: the scheduler must place pods here (a NotReady taint added by the
	// TaintNodesByCondition admission plugin, or left from a stopped agent, goes).
	if len(node.Spec.Taints) > 0 || node.Spec.Unschedulable {
		node.Spec.Taints = nil
		node.Spec.Unschedulable = false
		if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("nodeagent: untaint Node %s: %w", a.NodeName, err)
		}
	}
	return a.writeNodeStatus(ctx, true)
}

// writeNodeStatus sets the Node's status: conditions (Ready as given), capacity,
// addresses, node info.
func (a *Agent) writeNodeStatus(ctx context.Context, ready bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return a.tryWriteNodeStatus(ctx, ready) })
}

func (a *Agent) tryWriteNodeStatus(ctx context.Context, ready bool) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	readyStatus, reason, msg := corev1.ConditionTrue, "KubeletReady", "pgops node agent is posting ready status"
	if !ready {
		readyStatus, reason, msg = corev1.ConditionFalse, "KubeletNotReady", "pgops node agent stopped"
	}
	if !ready {
		// What the node-lifecycle controller (off in local clusters) would do: keep
		// the scheduler from placing pods on a node nobody runs. registerNode lifts it.
		node.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}}
		if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	node.Status.Conditions = []corev1.NodeCondition{
		cond(corev1.NodeReady, readyStatus, reason, msg),
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
	}
	node.Status.Capacity = a.allocatable.DeepCopy()
	node.Status.Allocatable = a.allocatable.DeepCopy()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: a.hostIP},
		{Type: corev1.NodeHostName, Address: a.NodeName},
	}
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem:         "linux",
		Architecture:            "amd64",
		KubeletVersion:          "v0.0.0-pgops-nodeagent",
		ContainerRuntimeVersion: "pgops-nodeagent://local-processes",
		OSImage:                 "local processes",
	}
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease every 10s and the Ready condition every minute.
// Nothing in a local cluster watches them (the node-lifecycle controller is off), but
// they keep the Node looking alive to humans and tools.
func (a *Agent) heartbeat() {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	lastStatus := time.Now()
	for {
		a.renewLease()
		select {
		case <-a.ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastStatus) > time.Minute {
			ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
			if err := a.writeNodeStatus(ctx, true); err != nil && a.ctx.Err() == nil {
				a.logf("node status heartbeat: %v", err)
			}
			cancel()
			lastStatus = time.Now()
		}
	}
}

func (a *Agent) renewLease() {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.NodeName},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.NodeName),
				LeaseDurationSeconds: ptr.To[int32](40),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
	} else if err == nil {
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil && a.ctx.Err() == nil && !apierrors.IsNotFound(err) {
		a.logf("renew lease: %v", err)
	}
}

// podChanged hands the newest version of a pod to its worker, starting one for a pod
// seen for the first time.
func (a *Agent) podChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	if _, done := a.finished[pod.UID]; done {
		return
	}
	w := a.workers[pod.UID]
	if w == nil {
		w = newPodWorker(a, pod)
		a.workers[pod.UID] = w
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.run()
			a.mu.Lock()
			if a.workers[pod.UID] == w {
				delete(a.workers, pod.UID)
			}
			a.mu.Unlock()
		}()
		return
	}
	w.update(pod)
}

// forget records that the pod uid is finished here: its containers are stopped and
// its object deleted (or about to be).
func (a *Agent) forget(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for u, t := range a.finished {
		if now.Sub(t) > 10*time.Minute {
			delete(a.finished, u)
		}
	}
	a.finished[uid] = now
}

// claimDeleted removes the data directory of a deleted PersistentVolumeClaim, as a
// volume of a StorageClass with reclaimPolicy Delete would go (the claim protection
// controller keeps a claim until no pod uses it).
func (a *Agent) claimDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	dir := a.pvcDir(pvc.Namespace, pvc.Name, string(pvc.UID))
	if _, err := os.Stat(dir); err != nil {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		a.logf("remove data of deleted claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
		return
	}
	a.logf("removed data of deleted claim %s/%s", pvc.Namespace, pvc.Name)
}

// podDeleted: the pod object is gone (deleted by us, or force-deleted by someone).
func (a *Agent) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	a.mu.Unlock()
	if w != nil {
		w.objectGone()
	}
}

// KillContainer SIGKILLs the processes of every running container of the pod
// namespace/name, as a test's "kill the server" would. The agent then restarts them
// per restartPolicy, counting a restart. It returns an error if the pod has no
// running container here.
func (a *Agent) KillContainer(namespace, name string) error {
	a.mu.Lock()
	var ws []*podWorker
	for _, w := range a.workers {
		if w.namespace == namespace && w.name == name {
			ws = append(ws, w)
		}
	}
	a.mu.Unlock()
	killed := 0
	for _, w := range ws {
		killed += w.killContainers()
	}
	if killed == 0 {
		return fmt.Errorf("nodeagent: pod %s/%s has no running container on node %s", namespace, name, a.NodeName)
	}
	return nil
}

// ContainerPID returns the pid of the running container of pod namespace/name (the
// first container if container is ""), or 0.
func (a *Agent) ContainerPID(namespace, name, container string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		if w.namespace == namespace && w.name == name {
			if pid := w.containerPID(container); pid != 0 {
				return pid
			}
		}
	}
	return 0
}

// Exec runs argv in the running container of pod namespace/name (the first container if
// container is ""), as `kubectl exec` would: inside its mount namespace, as its user,
// with its environment. It returns the combined output (at most 4 KiB).
func (a *Agent) Exec(ctx context.Context, namespace, name, containerName string, argv ...string) ([]byte, error) {
	a.mu.Lock()
	var c *container
	for _, w := range a.workers {
		if w.namespace == namespace && w.name == name {
			for _, wc := range w.containers {
				if containerName == "" || wc.spec.Name == containerName {
					c = wc
					break
				}
			}
		}
	}
	a.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("nodeagent: pod %s/%s has no container %q on node %s", namespace, name, containerName, a.NodeName)
	}
	c.mu.Lock()
	p, env := c.cur, c.env
	c.mu.Unlock()
	if p == nil || !p.waitSetUp(ctx) {
		return nil, fmt.Errorf("nodeagent: container %s of pod %s/%s is not running", c.spec.Name, namespace, name)
	}
	return a.execIn(ctx, p.pid, p.id, argv, env, time.Minute)
}

// Pids returns the process group ids of every running container process, for tests
// that check nothing outlives Stop.
func (a *Agent) Pids() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var pids []int
	for _, w := range a.workers {
		pids = append(pids, w.pids()...)
	}
	return pids
}

// Stop stops every container (its stop signal to each process group, SIGKILL after
// the pod's grace period capped at 10s), marks the pods NotReady, stops the service
// proxy and the informers, marks the Node NotReady and unschedulable (a taint; best
// effort), and removes a temporary RootDir. Pod objects stay: a new agent of the same
// NodeName takes them over. Stop is idempotent.
func (a *Agent) Stop() {
	a.stopOnce.Do(func() {
		a.mu.Lock()
		a.stopping = true
		ws := make([]*podWorker, 0, len(a.workers))
		for _, w := range a.workers {
			ws = append(ws, w)
		}
		a.mu.Unlock()
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.stopForShutdown()
			}()
		}
		wg.Wait()
		if a.proxy != nil {
			a.proxy.stop()
		}
		if a.cancel != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if err := a.writeNodeStatus(ctx, false); err != nil {
				a.logf("mark node NotReady: %v", err)
			}
			cancel()
			a.cancel()
		}
		if a.factory != nil {
			a.factory.Shutdown()
		}
		if a.claims != nil {
			a.claims.Shutdown()
		}
		if a.proxy != nil {
			a.proxy.shutdown()
		}
		a.wg.Wait()
		if a.ownsRootDir && !a.keepRootDir {
			_ = os.RemoveAll(a.rootDir)
		}
		if a.ownsNetwork {
			a.Network.Release()
		}
		a.logf("stopped")
	})
}
