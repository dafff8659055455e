package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"

	"github.com/geniam/geniam/am"
)

// LinkAttachment is one interface of a sliver's container on an experiment
// link or LAN: the agent puts a veth into the container's network namespace
// and joins it to the link's bridge, which reaches the link's other nodes by
// VXLAN (VNI Tag) over the node's experiment network.
type LinkAttachment struct {
	Link  string   `json:"link"`            // the link's client_id, for messages
	Name  string   `json:"name"`            // interface name inside the container, e.g. eth1
	MAC   string   `json:"mac"`             // 02:xx:.. (locally administered)
	CIDR  string   `json:"cidr,omitempty"`  // address/prefix inside the container; "" = no address
	Tag   int      `json:"tag"`             // VXLAN VNI of the link, unique across the aggregate
	Peers []string `json:"peers,omitempty"` // experiment-network addresses (VTEPs) of the other nodes on the link
	// Shaping of what the container sends and receives on this interface.
	CapacityKbps int64   `json:"capacity_kbps,omitempty"` // 0 = unshaped
	LatencyMs    int     `json:"latency_ms,omitempty"`    // one-way delay added to what the container sends
	LossPercent  float64 `json:"loss_percent,omitempty"`  // random loss of what the container sends
}

// Limits on link attachments.
const (
	maxLinksPerSliver = 64
	maxPeers          = 1024
	MaxVNI            = 1<<24 - 1
)

var ifNamePattern = regexp.MustCompile(`^eth[0-9]{1,3}$`)

func validLinks(ls []LinkAttachment) error {
	if len(ls) > maxLinksPerSliver {
		return am.Errorf(am.BadArgs, "start: at most %d links per sliver", maxLinksPerSliver)
	}
	names, tags := map[string]bool{}, map[int]bool{}
	for _, l := range ls {
		bad := func(format string, args ...any) error {
			return am.Errorf(am.BadArgs, "start: link %q: "+format, append([]any{truncate(l.Link, 80)}, args...)...)
		}
		if !ifNamePattern.MatchString(l.Name) || l.Name == "eth0" {
			return bad("interface name %q is not eth1..eth999", truncate(l.Name, 20))
		}
		if names[l.Name] {
			return bad("interface name %s is used twice", l.Name)
		}
		names[l.Name] = true
		if l.Tag < 1 || l.Tag > MaxVNI {
			return bad("tag %d is not a VNI (1-%d)", l.Tag, MaxVNI)
		}
		if tags[l.Tag] {
			return bad("tag %d is used by two interfaces of one sliver", l.Tag)
		}
		tags[l.Tag] = true
		mac, err := net.ParseMAC(l.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return bad("mac %q is not a unicast Ethernet address", truncate(l.MAC, 40))
		}
		if l.CIDR != "" {
			if _, _, err := net.ParseCIDR(l.CIDR); err != nil {
				return bad("cidr %q is not address/prefix", truncate(l.CIDR, 60))
			}
		}
		if len(l.Peers) > maxPeers {
			return bad("more than %d peers", maxPeers)
		}
		for _, p := range l.Peers {
			if net.ParseIP(p) == nil {
				return bad("peer %q is not an IP address", truncate(p, 60))
			}
		}
		if l.CapacityKbps < 0 || l.CapacityKbps > 100_000_000 || l.LatencyMs < 0 || l.LatencyMs > 60_000 || l.LossPercent < 0 || l.LossPercent > 100 {
			return bad("capacity_kbps (0-1e8), latency_ms (0-60000) or loss_percent (0-100) out of range")
		}
	}
	return nil
}

// ExperimentNetwork puts containers on experiment links (implemented by
// package expnet with netlink). Both methods are idempotent: Attach on a
// container that already has the interfaces only re-applies addresses and
// shaping, Detach of what is gone is not an error.
type ExperimentNetwork interface {
	// Attach creates the interfaces of links in the network namespace of
	// the process pid (the container's init).
	Attach(ctx context.Context, sliverID string, pid int, links []LinkAttachment) error
	// Detach removes the sliver's interfaces and every link bridge and
	// tunnel no other container uses any more.
	Detach(ctx context.Context, sliverID string, links []LinkAttachment) error
	// Prune removes the link bridges and tunnels no container is on (left
	// by slivers whose records were lost), and says how many.
	Prune(ctx context.Context) (int, error)
}

// errNoExperimentNetwork refuses links on an agent configured without one.
func errNoExperimentNetwork() error {
	return am.Errorf(am.Unsupported, "start: this node has no experiment network configured; links are not available here")
}

func linkErr(id string, err error) error {
	return am.Wrap(am.Error, err, "start: the links of %s could not be set up: %s", id, fmt.Sprint(err))
}

// attachLinks puts the running container of a locked sliver on its links.
// A failure kills the container and records the reason as its start error,
// so the sliver shows failed with why, not running without its network.
func (s *Service) attachLinks(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r.Spec == nil || len(r.Spec.Links) == 0 || r.ContainerID == "" {
		return nil
	}
	err := func() error {
		if s.cfg.Links == nil {
			return errNoExperimentNetwork()
		}
		cs, err := s.rt.Inspect(ctx, r.ContainerID)
		if err != nil {
			return err
		}
		if !cs.Running {
			return nil // attached when it runs again (Start)
		}
		if err := s.cfg.Links.Attach(ctx, r.ID, cs.Pid, r.Spec.Links); err != nil {
			return err
		}
		if r.LinksPid != cs.Pid {
			r.LinksPid = cs.Pid
			s.saveLogged(r)
		}
		return nil
	}()
	if err == nil {
		return nil
	}
	s.log.Warn("agent: link setup failed; killing the container", "sliver", r.ID, "err", err)
	if kerr := s.rt.Kill(ctx, r.ContainerID); kerr != nil && !errors.Is(kerr, ErrNotFound) {
		s.log.Warn("agent: killing the container after a failed link setup", "sliver", r.ID, "err", kerr)
	}
	r.StartError = "links: " + err.Error()
	s.saveLogged(r)
	return linkErr(r.ID, err)
}

// relinkIfRestarted attaches the links again when the engine has restarted
// a locked sliver's container (restart policy): the new process has a new,
// empty network namespace. Seen at the next status poll. It reports
// whether it failed, in which case the container has been killed.
func (s *Service) relinkIfRestarted(ctx context.Context, sl *sliver, cs ContainerState) (killed bool) {
	r := sl.rec
	if s.cfg.Links == nil || !cs.Running || cs.Pid == 0 || r.Spec == nil || len(r.Spec.Links) == 0 || cs.Pid == r.LinksPid {
		return false
	}
	s.log.Info("agent: container has a new process; attaching its links again", "sliver", r.ID, "pid", cs.Pid)
	if err := s.attachLinks(ctx, sl); err != nil {
		s.log.Warn("agent: re-attaching links", "sliver", r.ID, "err", err)
		return true
	}
	return false
}

// detachLinks removes a locked sliver's link interfaces, and the bridges
// and tunnels no container uses any more.
func (s *Service) detachLinks(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r == nil || r.Spec == nil || len(r.Spec.Links) == 0 || s.cfg.Links == nil {
		return nil
	}
	if err := s.cfg.Links.Detach(ctx, r.ID, r.Spec.Links); err != nil {
		return am.Wrap(am.ServerError, err, "the links of %s could not be removed: %s", r.ID, err)
	}
	return nil
}

// restoreLinks re-attaches the links of every running container after the
// agent started (the devices survive an agent restart, but not a reboot or
// a container restarted by the engine, which gets a new namespace).
func (s *Service) restoreLinks(ctx context.Context) {
	if s.cfg.Links == nil {
		return
	}
	for _, sl := range s.all() {
		sl.mu.Lock()
		if sl.rec != nil {
			if err := s.attachLinks(ctx, sl); err != nil {
				s.log.Warn("agent: restoring links", "sliver", sl.id, "err", err)
			}
		}
		sl.mu.Unlock()
	}
	if n, err := s.cfg.Links.Prune(ctx); err != nil {
		s.log.Warn("agent: pruning unused link bridges", "err", err)
	} else if n > 0 {
		s.log.Info("agent: removed unused link bridges", "count", n)
	}
}
