package nodeagent

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
)

// The pods' ARP entries for the gateway must stay true while other pods come and go: a
// Linux bridge without an address of its own would take the lowest of its ports'.
func TestBridgeAddressStaysAsPodsComeAndGo(t *testing.T) {
	network, err := ReserveNetwork()
	require.NoError(t, err)
	defer network.Release()
	bridgeMAC := func() string {
		iface, err := net.InterfaceByName(network.bridge)
		require.NoError(t, err)
		return iface.HardwareAddr.String()
	}
	assert.Equal(t, network.bridgeMAC(), bridgeMAC())

	first := network.PodCIDR.Addr().Next().Next()
	for i, uid := range []types.UID{"pod-a", "pod-b", "pod-c"} {
		ip := first
		for range i {
			ip = ip.Next()
		}
		_, err := network.addPod(uid, netip.Addr(ip))
		require.NoError(t, err)
		assert.Equal(t, network.bridgeMAC(), bridgeMAC(), "after adding %s", uid)
	}
	for _, uid := range []types.UID{"pod-a", "pod-c", "pod-b"} {
		network.removePod(uid)
		assert.Equal(t, network.bridgeMAC(), bridgeMAC(), "after removing %s", uid)
	}
}
