package kubenode

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Networks come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking and no
// real network uses: network i has pods in 198.18.(16i).0/20, node n's pods in its /24
// number n (the node's address, on its bridge, is the /24's first), and Services in
// 198.19.(16i).0/20.
const (
	networkCount = 16
	networkBits  = 20
	nodeBits     = 24
	// MaxNodes is how many nodes one network holds.
	MaxNodes = 16
	lockDir  = "/run/lock"
)

// network is a cluster's share of 198.18.0.0/15, held by the process that holds its lock
// file (an flock, which the kernel drops when the process dies however it dies). Whoever
// reserves a network next removes what a dead holder left: containers, bridges, routes
// and firewall rules.
type network struct {
	index       int
	podCIDR     netip.Prefix
	serviceCIDR netip.Prefix
	lock        *os.File
}

// reserveNetwork claims a free network for nodes whose state is under rootDir, and clears
// what an earlier holder left on it. The lock file names the holder's rootDir, so that the
// next holder finds the shims (they outlive it, and live in no cgroup of the nodes) and
// the mounts of a holder that died.
func reserveNetwork(rootDir string) (*network, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < networkCount; i++ {
		lock, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("pgops-network-%d.lock", i)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			lock.Close() // a live process has it
			continue
		}
		n := &network{
			index:       i,
			podCIDR:     netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(16 * i), 0}), networkBits),
			serviceCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(16 * i), 0}), networkBits),
			lock:        lock,
		}
		prev, _ := io.ReadAll(lock)
		if len(prev) > 0 {
			killShimsUnder(string(prev))
		}
		n.remove()
		if len(prev) > 0 {
			unmountUnder(filepath.Clean(string(prev))) // volumes, pods' network namespaces
			removeLogLinksInto(filepath.Clean(string(prev)))
		}
		if err := lock.Truncate(0); err != nil {
			n.release()
			return nil, err
		}
		if _, err := lock.WriteAt([]byte(rootDir), 0); err != nil {
			n.release()
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("kubenode: all %d networks in 198.18.0.0/15 are in use", networkCount)
}

// nodePodCIDR is node n's pod range; its first address is the node's.
func (n *network) nodePodCIDR(node int) netip.Prefix {
	a := n.podCIDR.Addr().As4()
	a[2] += byte(node)
	return netip.PrefixFrom(netip.AddrFrom4(a), nodeBits)
}

func (n *network) nodeIP(node int) netip.Addr { return n.nodePodCIDR(node).Addr().Next() }

// bridge is node n's bridge: its pods' veths, and the node's address.
func (n *network) bridge(node int) string { return fmt.Sprintf("pgops%dn%d", n.index, node) }

// clusterDNS is the address kubelets write into pods' resolv.conf. Nothing serves it: a
// lookup is refused at once by the host (the Service range is local to it) rather than
// sent anywhere.
func (n *network) clusterDNS() netip.Addr {
	a := n.serviceCIDR.Addr().As4()
	a[3] = 10
	return netip.AddrFrom4(a)
}

// cgroupRoot is node n's cgroup parent, under which its kubelet puts every pod.
func (n *network) cgroupRoot(node int) string { return fmt.Sprintf("/pgops-%d-%d", n.index, node) }

// addNode makes node n's bridge with the node's address.
func (n *network) addNode(node int) error {
	br := n.bridge(node)
	steps := [][]string{
		{"link", "add", br, "type", "bridge"},
		// A bridge without an address of its own takes the lowest of its ports', and so
		// changes it as pods' veths come and go; pods' ARP entries for the gateway then
		// go stale. CNI's bridge plugin would pin it too.
		{"link", "set", "dev", br, "address", fmt.Sprintf("02:70:67:01:%02x:%02x", n.index, node)},
		{"addr", "add", netip.PrefixFrom(n.nodeIP(node), nodeBits).String(), "dev", br},
		{"link", "set", "dev", br, "up"},
	}
	for _, s := range steps {
		if err := run("ip", s...); err != nil {
			return err
		}
	}
	return nil
}

// setUp routes and guards the network on the host: the Service range is local to the host
// (kube-proxy's rules turn a connection to a ClusterIP into one to a pod; one to no
// Service is refused at once), the host forwards between nodes' pods, and nothing is
// forwarded between the pods and any other network.
func (n *network) setUp() error {
	if err := run("ip", "route", "replace", "local", n.serviceCIDR.String(), "dev", "lo", "table", "local"); err != nil {
		return err
	}
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if err := run("sysctl", "-qw", s); err != nil {
			return err
		}
	}
	chain := n.firewallChain()
	pods := n.podCIDR.String()
	steps := [][]string{
		{"-N", chain},
		{"-A", chain, "-s", pods, "!", "-d", pods, "-j", "DROP"},
		{"-A", chain, "!", "-s", pods, "-d", pods, "-j", "DROP"},
		{"-I", "FORWARD", "1", "-j", chain},
	}
	for _, s := range steps {
		if err := run("iptables", append([]string{"-w"}, s...)...); err != nil {
			return err
		}
	}
	return nil
}

func (n *network) firewallChain() string { return "PGOPS-NET-" + strconv.Itoa(n.index) }

// remove deletes the network's bridges, routes, firewall rules and whatever a dead
// holder's nodes left running, best effort.
func (n *network) remove() {
	for node := 0; node < MaxNodes; node++ {
		killCgroup(n.cgroupRoot(node))
		removeCgroup(n.cgroupRoot(node))
		if _, err := os.Stat("/sys/class/net/" + n.bridge(node)); err == nil {
			_ = run("ip", "link", "del", n.bridge(node))
		}
	}
	_ = run("ip", "route", "del", "local", n.serviceCIDR.String(), "dev", "lo", "table", "local")
	chain := n.firewallChain()
	for run("iptables", "-w", "-D", "FORWARD", "-j", chain) == nil {
	}
	_ = run("iptables", "-w", "-F", chain)
	_ = run("iptables", "-w", "-X", chain)
}

// release removes the network and gives up its lock.
func (n *network) release() {
	n.remove()
	n.lock.Close() // drops the flock
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// errNotRoot explains what the nodes need.
var errNotRoot = errors.New("kubenode: real nodes need root (containerd, runc, network and cgroup setup)")
