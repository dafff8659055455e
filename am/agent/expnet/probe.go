package expnet

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/geniam/geniam/am"
)

// Probe finds out what this kernel supports for links by doing it: in a
// throw-away network namespace it creates a bridge, a veth pair, a dummy
// device with a tbf and a netem qdisc on it, a VXLAN device and an 802.1Q
// VLAN device. Asking the kernel is the only honest test: a module may be
// built but not loadable, or an option compiled out (CONFIG_NET_SCH_NETEM
// on this project's test machine). withVXLAN says whether the node has an
// experiment network at all (without one, links stay within the node).
// missing names, for the operator's log, what is not there and the error.
func Probe(withVXLAN bool, port int) (ls am.LinkSupport, missing []string, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread enters the scratch namespace and never leaves it:
		// with the thread still locked when the goroutine ends, the
		// runtime discards it, and the namespace goes with its last user.
		runtime.LockOSThread()
		ns, nerr := netns.New()
		if nerr != nil {
			err = fmt.Errorf("expnet: probe: a scratch network namespace: %w", nerr)
			return
		}
		defer ns.Close()
		h, nerr := netlink.NewHandleAt(ns)
		if nerr != nil {
			err = fmt.Errorf("expnet: probe: netlink in the scratch namespace: %w", nerr)
			return
		}
		defer h.Close()
		ls, missing = probeIn(h, withVXLAN, port)
	}()
	<-done
	return ls, missing, err
}

func probeIn(h *netlink.Handle, withVXLAN bool, port int) (am.LinkSupport, []string) {
	var ls am.LinkSupport
	var missing []string
	try := func(what string, err error) bool {
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", what, err))
		}
		return err == nil
	}
	add := func(l netlink.Link) error {
		if err := h.LinkAdd(l); err != nil {
			return err
		}
		return h.LinkSetUp(l)
	}
	la := func(name string) netlink.LinkAttrs {
		a := netlink.NewLinkAttrs()
		a.Name = name
		return a
	}
	bridge := try("bridge (CONFIG_BRIDGE)", add(&netlink.Bridge{LinkAttrs: la("pbr0")}))
	veth := try("veth (CONFIG_VETH)", add(&netlink.Veth{LinkAttrs: la("pv0"), PeerName: "pv1"}))
	ls.Enabled = bridge && veth
	if withVXLAN {
		ls.VXLAN = try("vxlan (CONFIG_VXLAN)", add(&netlink.Vxlan{LinkAttrs: la("px0"), VxlanId: 1, Port: port, Learning: true}))
	} else {
		missing = append(missing, "vxlan: no experiment network (links.interface) configured, so links stay within this node")
	}
	if !veth {
		return am.LinkSupport{VXLAN: ls.VXLAN}, missing // the qdisc and VLAN probes go on the veth
	}
	// The qdiscs go where links put them: on a veth end.
	d, err := h.LinkByName("pv0")
	if !try("veth", err) {
		return ls, missing
	}
	idx := d.Attrs().Index
	tbf := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate: 125000, Limit: 20000, Buffer: netlink.Xmittime(125000, 3028)}
	ls.Capacity = try("tbf qdisc (CONFIG_NET_SCH_TBF)", h.QdiscAdd(tbf))
	parent := uint32(netlink.HANDLE_ROOT)
	if ls.Capacity {
		parent = netlink.MakeHandle(1, 0) // where links put it: under the tbf
	}
	nq := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(10, 0), Parent: parent},
		netlink.NetemQdiscAttrs{Latency: 1000, Loss: 1, Limit: 1000})
	ls.Netem = try("netem qdisc (CONFIG_NET_SCH_NETEM)", h.QdiscAdd(nq))
	ls.VLAN = try("802.1Q VLAN (CONFIG_VLAN_8021Q)", add(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "pvl0", ParentIndex: idx}, VlanId: 10}))
	return ls, missing
}
