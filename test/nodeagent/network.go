package nodeagent

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
)

// Pod networks come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking
// and no real network uses: /20 number i has pods in 198.18.(16i).0/20 (its first
// address on the host's bridge, the pods' gateway) and Services in 198.19.(16i).0/20.
const (
	networkCount = 16
	networkBits  = 20
	bridgePrefix = "pgopsbr"
	netnsDir     = "/run/netns"
	lockDir      = "/run/lock"
)

// Network is a node's pod network, as a CNI plugin would make it: a bridge on the host,
// and per pod a network namespace of its own, with a veth on the bridge, the pod's
// address and a default route through the host. Pods listen on all their addresses,
// like pods of a real cluster, without colliding. The Service range is routed to the
// host (a local route), where the agent's proxy listens on each ClusterIP.
//
// A Network belongs to the process that holds its lock file (an flock, which the kernel
// drops when the process dies, however it dies); ReserveNetwork takes over networks whose
// process is gone, removing what they left, so a killed test run blocks nothing. It needs
// root and iproute2.
type Network struct {
	// Index is the number of the /20s.
	Index int
	// PodCIDR is the pods' range; its first address is the host's (Gateway).
	PodCIDR netip.Prefix
	// ServiceCIDR is the Service ClusterIP range, for the API server's
	// --service-cluster-ip-range (localcluster.Options.ServiceCIDR).
	ServiceCIDR netip.Prefix
	// Gateway is the host's address on the bridge: the pods' default route and the
	// node's address.
	Gateway netip.Addr

	ip     string
	bridge string
	lock   *os.File

	mu       sync.Mutex
	released bool
}

// ReserveNetwork claims a free pod network.
func ReserveNetwork() (*Network, error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, errors.New("nodeagent: the pod network needs ip from iproute2 (apt-get install iproute2)")
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < networkCount; i++ {
		lock, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("pgops-network-%d.lock", i)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			lock.Close() // another live process has it
			continue
		}
		n := newNetwork(ip, i)
		n.lock = lock
		n.remove() // whatever a process that is gone left behind
		if err := n.create(); err != nil {
			n.Release()
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("nodeagent: all %d pod networks in 198.18.0.0/15 are in use", networkCount)
}

func newNetwork(ip string, i int) *Network {
	pods := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(16 * i), 0}), networkBits)
	return &Network{
		Index:       i,
		PodCIDR:     pods,
		ServiceCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(16 * i), 0}), networkBits),
		Gateway:     pods.Addr().Next(),
		ip:          ip,
		bridge:      bridgePrefix + strconv.Itoa(i),
	}
}

func (n *Network) run(args ...string) error {
	out, err := exec.Command(n.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// create makes the bridge and routes the Service range to the host.
func (n *Network) create() error {
	steps := [][]string{
		{"link", "add", n.bridge, "type", "bridge"},
		// A bridge without an address of its own takes the lowest of its ports', and so
		// changes it as pods' veths come and go: the pods' ARP entries for the gateway
		// then name an address nobody has, and their packets to the host are lost until
		// the entries expire (seconds; a streaming standby's connection stalled that
		// long). CNI's bridge plugin pins it too.
		{"link", "set", "dev", n.bridge, "address", n.bridgeMAC()},
		{"addr", "add", netip.PrefixFrom(n.Gateway, networkBits).String(), "dev", n.bridge},
		{"link", "set", "dev", n.bridge, "up"},
		// In the local table, so the proxy can bind ClusterIPs and the host takes their
		// packets as its own.
		{"route", "replace", "local", n.ServiceCIDR.String(), "dev", "lo", "table", "local"},
	}
	for _, s := range steps {
		if err := n.run(s...); err != nil {
			return err
		}
	}
	return nil
}

// bridgeMAC is the bridge's own address: locally administered, unique per network index.
func (n *Network) bridgeMAC() string {
	return fmt.Sprintf("02:70:67:00:%02x:%02x", (n.Index>>8)&0xff, n.Index&0xff)
}

// remove deletes the network's pod namespaces, bridge and route, best effort (only the
// lock's holder calls it).
func (n *Network) remove() {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), n.netnsPrefix()) {
			_ = n.run("netns", "delete", e.Name())
		}
	}
	if _, err := os.Stat("/sys/class/net/" + n.bridge); err == nil {
		_ = n.run("link", "del", n.bridge)
	}
	_ = exec.Command(n.ip, "route", "del", "local", n.ServiceCIDR.String(), "dev", "lo", "table", "local").Run()
}

// Release removes the network and every pod namespace still on it, and gives up its
// lock. It is idempotent.
func (n *Network) Release() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.released {
		return
	}
	n.released = true
	n.remove()
	if n.lock != nil {
		n.lock.Close() // drops the flock
	}
}

func (n *Network) netnsPrefix() string { return "pgops-" + strconv.Itoa(n.Index) + "-" }

// podNetns is the name of pod uid's network namespace, and the host side of its veth
// (at most 15 bytes, the kernel's limit).
func (n *Network) podNames(uid types.UID) (netns, veth string) {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return n.netnsPrefix() + string(uid), fmt.Sprintf("pgv%x%08x", n.Index, h.Sum32())
}

// addPod gives pod uid a network namespace with address ip, reachable from the host and
// the other pods over the bridge, and returns its path (for nsenter --net). A namespace
// left from an earlier run of the pod is made again.
func (n *Network) addPod(uid types.UID, ip netip.Addr) (string, error) {
	netns, veth := n.podNames(uid)
	n.removePod(uid)
	steps := [][]string{
		{"netns", "add", netns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns},
		{"link", "set", "dev", veth, "master", n.bridge, "up"},
		{"-n", netns, "link", "set", "dev", "lo", "up"},
		{"-n", netns, "addr", "add", netip.PrefixFrom(ip, networkBits).String(), "dev", "eth0"},
		{"-n", netns, "link", "set", "dev", "eth0", "up"},
		{"-n", netns, "route", "add", "default", "via", n.Gateway.String()},
	}
	for _, s := range steps {
		if err := n.run(s...); err != nil {
			n.removePod(uid)
			return "", err
		}
	}
	return filepath.Join(netnsDir, netns), nil
}

// removePod deletes pod uid's namespace (and with it its veth), best effort.
func (n *Network) removePod(uid types.UID) {
	netns, veth := n.podNames(uid)
	if _, err := os.Stat(filepath.Join(netnsDir, netns)); err == nil {
		_ = n.run("netns", "delete", netns)
	}
	if _, err := os.Stat("/sys/class/net/" + veth); err == nil {
		_ = n.run("link", "del", veth)
	}
}
