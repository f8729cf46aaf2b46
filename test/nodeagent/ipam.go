package nodeagent

import (
	"errors"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ipam hands out pod IPs from a prefix. It goes round the range rather than reusing
// the lowest free address, so an address just released (a deleted pod, whose
// endpoints may still be cached somewhere) is not given to the next pod.
type ipam struct {
	mu     sync.Mutex
	prefix netip.Prefix
	next   netip.Addr
	used   map[netip.Addr]types.UID
}

// newIPAM hands out p's addresses but reserved (the gateway's).
func newIPAM(p netip.Prefix, reserved ...netip.Addr) *ipam {
	m := &ipam{prefix: p, next: p.Addr().Next(), used: map[netip.Addr]types.UID{}}
	for _, a := range reserved {
		m.used[a] = "reserved"
	}
	return m
}

// usable excludes the prefix's first and last address.
func (m *ipam) usable(a netip.Addr) bool {
	if !m.prefix.Contains(a) || a == m.prefix.Addr() {
		return false
	}
	return m.prefix.Contains(a.Next()) // not the last one
}

// allocate returns the address of pod uid: want if it is free and in range (a pod
// taken over from an earlier agent keeps its IP), else the next free one.
func (m *ipam) allocate(uid types.UID, want string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for a, u := range m.used {
		if u == uid {
			return a, nil
		}
	}
	if a, err := netip.ParseAddr(want); err == nil && m.usable(a) {
		if _, taken := m.used[a]; !taken {
			m.used[a] = uid
			return a, nil
		}
	}
	start := m.next
	for a := start; ; {
		if m.usable(a) {
			if _, taken := m.used[a]; !taken {
				m.used[a] = uid
				m.next = a.Next()
				return a, nil
			}
		}
		a = a.Next()
		if !m.prefix.Contains(a) {
			a = m.prefix.Addr().Next()
		}
		if a == start {
			return netip.Addr{}, errors.New("pod CIDR " + m.prefix.String() + " is full")
		}
	}
}

func (m *ipam) release(a netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.used, a)
}
