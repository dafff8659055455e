// Package expnet builds a node's side of experiment links with the kernel's
// own devices, driven through netlink: one Linux bridge per link (gbr<VNI>),
// a VXLAN device on it (gvx<VNI>) that carries the link to the other nodes
// over the operator's experiment network, and one veth pair per container
// interface, moved into the container's network namespace. tc (tbf, netem)
// shapes each interface. Nothing is kept in memory: the kernel's devices are
// the state, so an agent that restarts finds them again, and a bridge is
// removed when its last container port is gone.
package expnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/geniam/geniam/am/agent"
)

// Config says where the node's experiment network is.
type Config struct {
	// Interface is the host interface on the experiment network that
	// carries VXLAN to the other nodes (e.g. eth1). Required for links
	// that span nodes; links within the node work without it.
	Interface string
	// Address is this node's address on Interface (the VTEP); the other
	// nodes send this node's VXLAN packets there.
	Address string
	// Port is the VXLAN UDP port; default 4789.
	Port int
	// MTU of the container interfaces; default 1450 (1500 less VXLAN's 50).
	MTU int
	// NetNS, if set, is the path of the network namespace that holds
	// Interface and the link bridges (e.g. /run/netns/exp); default the
	// agent's own. The agent's control traffic stays where it is.
	NetNS string
}

// Network implements agent.ExperimentNetwork.
type Network struct {
	cfg  Config
	ns   netns.NsHandle // the host namespace when Config.NetNS is set
	host *netlink.Handle
	vtep net.IP
	mu   sync.Mutex // one change of the host's bridges at a time
}

var _ agent.ExperimentNetwork = (*Network)(nil)

// New opens the host namespace and checks the experiment interface.
func New(cfg Config) (*Network, error) {
	if cfg.Port == 0 {
		cfg.Port = 4789
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1450
	}
	if cfg.MTU < 576 || cfg.MTU > 9000 {
		return nil, fmt.Errorf("expnet: mtu %d is not between 576 and 9000", cfg.MTU)
	}
	n := &Network{cfg: cfg, ns: netns.None()}
	var err error
	if cfg.NetNS != "" {
		if n.ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("expnet: network namespace %s: %w", cfg.NetNS, err)
		}
		n.host, err = netlink.NewHandleAt(n.ns)
		if err != nil {
			n.ns.Close()
			return nil, fmt.Errorf("expnet: netlink in %s: %w", cfg.NetNS, err)
		}
	} else if n.host, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("expnet: netlink: %w", err)
	}
	if cfg.Interface != "" || cfg.Address != "" {
		if cfg.Interface == "" || cfg.Address == "" {
			n.Close()
			return nil, errors.New("expnet: give both the experiment interface and this node's address on it, or neither")
		}
		if n.vtep = net.ParseIP(cfg.Address); n.vtep == nil {
			n.Close()
			return nil, fmt.Errorf("expnet: address %q is not an IP address", cfg.Address)
		}
		if _, err := n.host.LinkByName(cfg.Interface); err != nil {
			n.Close()
			return nil, fmt.Errorf("expnet: experiment interface %s: %w", cfg.Interface, err)
		}
	}
	return n, nil
}

// Close releases the netlink handle.
func (n *Network) Close() {
	n.host.Close()
	if n.ns.IsOpen() {
		n.ns.Close()
	}
}

// Device names: at most 15 bytes (IFNAMSIZ-1).
func bridgeName(vni int) string { return "gbr" + strconv.Itoa(vni) }
func vxlanName(vni int) string  { return "gvx" + strconv.Itoa(vni) }

// vethNames names the host end of a sliver's interface and, until it is
// renamed in the container, its peer: a hash keeps them within 15 bytes.
func vethNames(sliverID, ifName string) (host, peer string) {
	h := sha256.Sum256([]byte(sliverID + "\x00" + ifName))
	s := hex.EncodeToString(h[:5])
	return "gh" + s, "gc" + s
}

// Attach implements agent.ExperimentNetwork.
func (n *Network) Attach(ctx context.Context, sliverID string, pid int, links []agent.LinkAttachment) error {
	if pid <= 0 {
		return fmt.Errorf("the container has no process (pid %d): is it running?", pid)
	}
	cns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("network namespace of the container: %w", err)
	}
	defer cns.Close()
	ch, err := netlink.NewHandleAt(cns)
	if err != nil {
		return fmt.Errorf("netlink in the container: %w", err)
	}
	defer ch.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := n.attach(ch, cns, sliverID, l); err != nil {
			return fmt.Errorf("link %s (%s): %w", l.Link, l.Name, err)
		}
	}
	return nil
}

func (n *Network) attach(ch *netlink.Handle, cns netns.NsHandle, sliverID string, l agent.LinkAttachment) error {
	br, err := n.ensureBridge(l)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(l.MAC)
	if err != nil {
		return err
	}
	hostName, peerName := vethNames(sliverID, l.Name)
	in, err := ch.LinkByName(l.Name)
	if err == nil && !bytesEqual(in.Attrs().HardwareAddr, mac) {
		return fmt.Errorf("the container already has an interface %s that is not this link's", l.Name)
	}
	if err != nil {
		// Not in the container (new, or the container was restarted and
		// got a new namespace): start from a fresh pair.
		if old, err := n.host.LinkByName(hostName); err == nil {
			if err := n.host.LinkDel(old); err != nil {
				return fmt.Errorf("removing stale %s: %w", hostName, err)
			}
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.MasterIndex = hostName, n.cfg.MTU, br.Attrs().Index
		veth := &netlink.Veth{LinkAttrs: la, PeerName: peerName, PeerHardwareAddr: mac}
		if err := n.host.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth %s: %w", hostName, err)
		}
		if err := n.noHostAddress(veth); err != nil {
			return err
		}
		peer, err := n.host.LinkByName(peerName)
		if err != nil {
			return fmt.Errorf("finding veth peer %s: %w", peerName, err)
		}
		if err := n.host.LinkSetNsFd(peer, int(cns)); err != nil {
			n.host.LinkDel(veth)
			return fmt.Errorf("moving %s into the container: %w", peerName, err)
		}
		if in, err = ch.LinkByName(peerName); err != nil {
			return fmt.Errorf("finding %s in the container: %w", peerName, err)
		}
		if err := ch.LinkSetName(in, l.Name); err != nil {
			return fmt.Errorf("renaming %s to %s: %w", peerName, l.Name, err)
		}
		if err := ch.LinkSetMTU(in, n.cfg.MTU); err != nil {
			return fmt.Errorf("mtu of %s: %w", l.Name, err)
		}
	}
	host, err := n.host.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host end %s: %w", hostName, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.host.LinkSetMaster(host, br); err != nil {
			return fmt.Errorf("joining %s to %s: %w", hostName, br.Attrs().Name, err)
		}
	}
	if err := n.host.LinkSetUp(host); err != nil {
		return fmt.Errorf("bringing up %s: %w", hostName, err)
	}
	if l.CIDR != "" {
		addr, err := netlink.ParseAddr(l.CIDR)
		if err != nil {
			return err
		}
		if err := ch.AddrReplace(in, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", l.CIDR, l.Name, err)
		}
	}
	if err := ch.LinkSetUp(in); err != nil {
		return fmt.Errorf("bringing up %s: %w", l.Name, err)
	}
	if err := shape(ch, in, l, true); err != nil {
		return err
	}
	return shape(n.host, host, l, false)
}

// noHostAddress keeps the host's side of a link (bridge, VXLAN device, veth
// end) without an IPv6 link-local address, which the kernel would otherwise
// give it when it comes up: the host must not be reachable from a link.
func (n *Network) noHostAddress(l netlink.Link) error {
	err := n.host.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("turning off IPv6 addresses on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// ensureBridge makes the link's bridge and, when the link has other nodes,
// its VXLAN device with one forwarding entry per peer (head-end replication:
// broadcasts go to every peer, unicast follows learned addresses).
func (n *Network) ensureBridge(l agent.LinkAttachment) (netlink.Link, error) {
	name := bridgeName(l.Tag)
	br, err := n.host.LinkByName(name)
	if err != nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, n.cfg.MTU
		if err := n.host.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		if br, err = n.host.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		if err := n.noHostAddress(br); err != nil {
			return nil, err
		}
	}
	if err := n.bridgeWithoutNetfilter(br); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := n.host.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", name, err)
	}
	if len(l.Peers) == 0 {
		return br, nil
	}
	if n.vtep == nil {
		return nil, errors.New("the link spans nodes but this node has no experiment network (agent: network.interface and network.address)")
	}
	vname := vxlanName(l.Tag)
	vx, err := n.host.LinkByName(vname)
	if err != nil {
		under, err := n.host.LinkByName(n.cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("experiment interface %s: %w", n.cfg.Interface, err)
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.MasterIndex = vname, n.cfg.MTU, br.Attrs().Index
		v := &netlink.Vxlan{LinkAttrs: la, VxlanId: l.Tag, VtepDevIndex: under.Attrs().Index, SrcAddr: n.vtep, Port: n.cfg.Port, Learning: true}
		if err := n.host.LinkAdd(v); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating vxlan %s: %w", vname, err)
		}
		if vx, err = n.host.LinkByName(vname); err != nil {
			return nil, fmt.Errorf("vxlan %s: %w", vname, err)
		}
		if err := n.noHostAddress(vx); err != nil {
			return nil, err
		}
	}
	if vx.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.host.LinkSetMaster(vx, br); err != nil {
			return nil, fmt.Errorf("joining %s to %s: %w", vname, name, err)
		}
	}
	if err := n.host.LinkSetUp(vx); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", vname, err)
	}
	for _, p := range l.Peers {
		ip := net.ParseIP(p)
		if ip == nil || ip.Equal(n.vtep) {
			continue
		}
		fdb := &netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, IP: ip, HardwareAddr: make(net.HardwareAddr, 6)}
		if err := n.host.NeighAppend(fdb); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("forwarding entry for peer %s on %s: %w", p, vname, err)
		}
	}
	return br, nil
}

// shape applies the link's shaping to what leaves link (the container's
// end when sending, the host's end toward the container when receiving):
// tbf for capacity, and under it netem for latency and loss (only on what
// the container sends, so each direction is delayed once).
func shape(h *netlink.Handle, link netlink.Link, l agent.LinkAttachment, sending bool) error {
	idx := link.Attrs().Index
	netem := sending && (l.LatencyMs > 0 || l.LossPercent > 0)
	if l.CapacityKbps == 0 && !netem {
		return nil
	}
	root := uint32(netlink.HANDLE_ROOT)
	if l.CapacityKbps > 0 {
		rate := uint64(l.CapacityKbps) * 1000 / 8 // bytes per second
		burst := max(uint32(rate/100), 2*1514)    // 10 ms of traffic, at least two frames
		// Queue: 100 ms of traffic beyond the burst, plus the netem delay's worth when it sits below.
		limit := burst + uint32(rate/10) + uint32(rate*uint64(l.LatencyMs)/1000)
		tbf := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(1, 0), Parent: root},
			Rate: rate, Limit: limit, Buffer: netlink.Xmittime(rate, burst)}
		if err := h.QdiscReplace(tbf); err != nil {
			return fmt.Errorf("tbf %d kbit/s on %s: %w", l.CapacityKbps, link.Attrs().Name, err)
		}
		root = netlink.MakeHandle(1, 0)
	}
	if !netem {
		return nil
	}
	var limit uint32 = 10000
	nq := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(10, 0), Parent: root},
		netlink.NetemQdiscAttrs{Latency: uint32(l.LatencyMs) * 1000, Loss: float32(l.LossPercent), Limit: limit})
	if err := h.QdiscReplace(nq); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) || strings.Contains(err.Error(), "no such file") {
			return fmt.Errorf("this node's kernel has no netem (sch_netem), so latency and packet_loss cannot be applied: %w", err)
		}
		return fmt.Errorf("netem on %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// Detach implements agent.ExperimentNetwork.
func (n *Network) Detach(ctx context.Context, sliverID string, links []agent.LinkAttachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, l := range links {
		hostName, _ := vethNames(sliverID, l.Name)
		if v, err := n.host.LinkByName(hostName); err == nil {
			if err := n.host.LinkDel(v); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", hostName, err))
				continue
			}
		}
		if _, err := n.dropBridgeIfUnused(l.Tag); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Prune implements agent.ExperimentNetwork.
func (n *Network) Prune(ctx context.Context) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	all, err := n.host.LinkList()
	if err != nil {
		return 0, fmt.Errorf("listing links: %w", err)
	}
	pruned := 0
	var errs []error
	for _, l := range all {
		vni, err := strconv.Atoi(strings.TrimPrefix(l.Attrs().Name, "gbr"))
		if l.Type() != "bridge" || !strings.HasPrefix(l.Attrs().Name, "gbr") || err != nil || bridgeName(vni) != l.Attrs().Name {
			continue
		}
		gone, err := n.dropBridgeIfUnused(vni)
		if err != nil {
			errs = append(errs, err)
		} else if gone {
			pruned++
		}
	}
	return pruned, errors.Join(errs...)
}

// dropBridgeIfUnused removes a link's bridge and VXLAN device once no
// container port is left on the bridge, and says whether it did.
func (n *Network) dropBridgeIfUnused(vni int) (bool, error) {
	br, err := n.host.LinkByName(bridgeName(vni))
	if err != nil {
		return false, nil // gone already
	}
	all, err := n.host.LinkList()
	if err != nil {
		return false, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range all {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Attrs().Name != vxlanName(vni) {
			return false, nil // another container is still on the link
		}
	}
	if vx, err := n.host.LinkByName(vxlanName(vni)); err == nil {
		if err := n.host.LinkDel(vx); err != nil {
			return false, fmt.Errorf("removing %s: %w", vxlanName(vni), err)
		}
	}
	if err := n.host.LinkDel(br); err != nil {
		return false, fmt.Errorf("removing %s: %w", bridgeName(vni), err)
	}
	return true, nil
}

// bridgeWithoutNetfilter keeps a link bridge's frames out of iptables,
// ip6tables and arptables. On a Docker host br_netfilter is loaded and the
// FORWARD policy is DROP, which would silently drop every frame the bridge
// forwards between containers; experiment links are layer 2 and no business
// of the host's firewall. (The netlink library has no field for it, so the
// attribute is sent as ip-link(8) does: bridge nf_call_iptables 0.)
func (n *Network) bridgeWithoutNetfilter(br netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(br.Attrs().Index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	for _, a := range []int{nl.IFLA_BR_NF_CALL_IPTABLES, nl.IFLA_BR_NF_CALL_IP6TABLES, nl.IFLA_BR_NF_CALL_ARPTABLES} {
		data.AddRtAttr(a, []byte{0})
	}
	req.AddData(info)
	if n.ns.IsOpen() {
		s, err := nl.GetNetlinkSocketAt(n.ns, netns.None(), unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink socket: %w", err)
		}
		defer s.Close()
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	}
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("turning off netfilter on the bridge: %w", err)
	}
	return nil
}
