// Package conntrack deletes UDP connection-tracking entries that no longer
// match the rules, so that UDP clients move to a live endpoint at once
// instead of waiting for the entry to time out. Which entries are stale is
// the model's decision (proxy.UDPTargets); this package only lists and
// deletes, over netlink.
package conntrack

import (
	"fmt"
	"maps"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/proxy"
)

// Cleaner deletes stale UDP entries after syncs.
type Cleaner struct {
	h *netlink.Handle

	mu   sync.Mutex
	last map[proxy.Family]proxy.UDPTargets
}

// New returns a Cleaner for the caller's network namespace, or for the
// namespace at netnsPath when not empty.
func New(netnsPath string) (*Cleaner, error) {
	var h *netlink.Handle
	var err error
	if netnsPath == "" {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	} else {
		ns, nerr := netns.GetFromPath(netnsPath)
		if nerr != nil {
			return nil, fmt.Errorf("conntrack: %w", nerr)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	return &Cleaner{h: h, last: map[proxy.Family]proxy.UDPTargets{}}, nil
}

// Close releases the netlink sockets.
func (c *Cleaner) Close() { c.h.Close() }

// Clean deletes the UDP entries that s makes stale, in both families. It
// does nothing for a family whose UDP destinations and endpoints are as at
// the last Clean, so steady syncs cost no conntrack listing.
func (c *Cleaner) Clean(s *proxy.State) (deleted uint, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fs := range s.Families() {
		targets := fs.UDPTargets()
		if prev, ok := c.last[fs.Family]; ok && maps.EqualFunc(prev, targets, maps.Equal) {
			continue
		}
		fam := netlink.InetFamily(unix.AF_INET)
		if fs.Family == proxy.IPv6 {
			fam = unix.AF_INET6
		}
		local, err := c.localAddrs(int(fam))
		if err != nil {
			return deleted, err
		}
		n, err := c.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, staleFilter{targets: targets, local: local})
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("conntrack: deleting stale UDP entries: %w", err)
		}
		c.last[fs.Family] = targets
	}
	return deleted, nil
}

// localAddrs are the node's addresses: a flow to one of them on a NodePort
// is a NodePort flow.
func (c *Cleaner) localAddrs(family int) (map[netip.Addr]bool, error) {
	addrs, err := c.h.AddrList(nil, family)
	if err != nil {
		return nil, fmt.Errorf("conntrack: listing addresses: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

type staleFilter struct {
	targets proxy.UDPTargets
	local   map[netip.Addr]bool
}

func (f staleFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dstIP, ok1 := netip.AddrFromSlice(flow.Forward.DstIP)
	srcIP, ok2 := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return false
	}
	dst := netip.AddrPortFrom(dstIP.Unmap(), flow.Forward.DstPort)
	reply := netip.AddrPortFrom(srcIP.Unmap(), flow.Reverse.SrcPort)
	return f.targets.Stale(dst, reply, f.local[dst.Addr()])
}
