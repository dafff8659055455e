package node

import (
	"fmt"
	"slices"
	"strings"

	"github.com/geniam/geniam/am/agent"
)

// What an experimenter's container may use on this node unless the operator
// says otherwise. Experimenters run arbitrary images as root, so nothing is
// unlimited by default: without these, one container forked 3,000 processes
// and touched 3 GiB in a test.
const (
	DefaultMemoryBytes = 1 << 30 // 1 GiB, swap included
	DefaultNanoCPUs    = 1e9     // one CPU
	DefaultPidsLimit   = 512     // processes and threads
)

// DefaultCapabilities is the documented minimum a container keeps; every
// other capability is dropped. Compared with Docker's default set it lacks
// MKNOD (device nodes such as /dev/mem were created under /data), NET_RAW
// (raw sockets: spoofed packets on experiment networks), SETFCAP and
// AUDIT_WRITE. What is left lets an image's root install packages, run
// daemons that switch users (sshd) and bind low ports.
var DefaultCapabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT",
}

// knownCapabilities are the names an operator may list (Linux
// capabilities, without the CAP_ prefix).
var knownCapabilities = []string{
	"AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN",
	"DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
	"LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
	"SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
	"SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
}

// limitDefaults fills the operator's limits: 0 is the safe default, a
// negative number is "no limit" (the operator's explicit choice).
func (c *Config) limitDefaults() error {
	def := func(v *int64, d int64) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	def(&c.MemoryBytes, DefaultMemoryBytes)
	def(&c.NanoCPUs, DefaultNanoCPUs)
	def(&c.PidsLimit, DefaultPidsLimit)
	if c.DataQuotaBytes > 0 {
		if why := DataQuotaUsable(); why != "" {
			return fmt.Errorf("agent: data_quota_bytes is set but %s; set it negative to run without", why)
		}
	}
	if c.DataOwner != "" {
		if _, _, err := (&Service{cfg: *c}).dataOwner(); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	if c.Capabilities == nil {
		c.Capabilities = DefaultCapabilities
	}
	c.Capabilities = slices.Clone(c.Capabilities) // normalised below; never the caller's array
	for i, cp := range c.Capabilities {
		cp = strings.TrimPrefix(strings.ToUpper(cp), "CAP_")
		if !slices.Contains(knownCapabilities, cp) {
			return fmt.Errorf("agent: capability %q is not a Linux capability", c.Capabilities[i])
		}
		c.Capabilities[i] = cp
	}
	return nil
}

// limits is what a container started with req gets: the request may ask
// for less memory or fewer CPUs than the node allows, never more.
func (s *Service) limits(req *agent.StartRequest) agent.Limits {
	return agent.Limits{
		MemoryBytes:  capLimit(req.MemoryBytes, s.cfg.MemoryBytes),
		NanoCPUs:     capLimit(int64(req.CPUs*1e9), s.cfg.NanoCPUs),
		Pids:         capLimit(req.Pids, s.cfg.PidsLimit),
		DataBytes:    s.dataQuota(req),
		ArchiveBytes: capLimit(req.ArchiveBytes, s.cfg.MaxArchiveBytes),
		Capabilities: s.cfg.Capabilities,
		ReadOnlyRoot: s.cfg.ReadOnlyRootfs,
	}
}

// capLimit is the smaller positive of asked and max (0 means none).
func capLimit(asked, max int64) int64 {
	switch {
	case asked <= 0:
		return max
	case max <= 0:
		return asked
	default:
		return min(asked, max)
	}
}
