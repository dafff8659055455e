package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// The size of /data is enforced with a filesystem of its own per sliver: an
// ext4 image file of DataQuotaBytes (sparse: it costs only what is written),
// loop-mounted nosuid,nodev on the sliver's data directory. This holds on a
// stock Debian host as root (e2fsprogs and util-linux are always there)
// whatever the host's filesystem, needs no quota setup, and a full /data
// fills only its own image: the agent's records, the other slivers and the
// host keep their space, so Delete always works.
//
// The image lives in the sliver's directory next to /data, never inside it,
// so the container cannot reach or replace it.

// DataQuotaUsable says why this host cannot enforce /data quotas, or ""
// when it can: the agent must be root and find mkfs.ext4 and mount.
func DataQuotaUsable() string {
	if os.Geteuid() != 0 {
		return "/data quotas need the agent to run as root (loop mounts)"
	}
	for _, cmd := range []string{"mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return "/data quotas need " + cmd + " (Debian packages e2fsprogs and mount)"
		}
	}
	return ""
}

func (s store) dataImage(id string) string { return filepath.Join(s.sliverDir(id), "data.ext4") }

// isMountPoint reports whether dir is mounted on (its device differs from
// its parent's).
func isMountPoint(dir string) (bool, error) {
	var d, p unix.Stat_t
	if err := unix.Lstat(dir, &d); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &p); err != nil {
		return false, err
	}
	return d.Dev != p.Dev, nil
}

// dataQuota is the size of the /data filesystem of a sliver started with
// req: what the aggregate asked for its sliver type, at most the node's
// data_quota_bytes; 0 when the node enforces none.
func (s *Service) dataQuota(req *agent.StartRequest) int64 {
	if s.cfg.DataQuotaBytes <= 0 {
		return 0
	}
	if req == nil {
		return s.cfg.DataQuotaBytes
	}
	return capLimit(req.DataBytes, s.cfg.DataQuotaBytes)
}

// ensureData makes the sliver's /data directory and, when quota is set,
// its filesystem of that size (made once, mounted whenever it is not: after
// a reboot).
func (s *Service) ensureData(ctx context.Context, id string, quota int64) error {
	dir := s.st.dataDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	uid, gid, err := s.dataOwner()
	if err != nil {
		return err
	}
	if quota <= 0 {
		return os.Lchown(dir, uid, gid)
	}
	if mounted, err := isMountPoint(dir); err != nil || mounted {
		return err
	}
	img := s.st.dataImage(id)
	if _, err := os.Stat(img); errors.Is(err, os.ErrNotExist) {
		if d, err := os.Open(dir); err == nil {
			names, _ := d.Readdirnames(1)
			d.Close()
			if len(names) > 0 {
				// A /data from before quotas were enabled: mounting over it
				// would hide its files from exports and lose them at Delete.
				s.log.Warn("agent: /data of this sliver predates the quota and stays unbounded", "sliver", id)
				return nil
			}
		}
		if err := s.makeDataImage(ctx, img, quota); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// mount sets up the loop device with autoclear: it goes away with the
	// last unmount.
	if out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev", img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mounting the /data filesystem: %v: %s", err, am.Clip(string(out), 300))
	}
	// mkfs's lost+found is not the experimenter's data: without it /data
	// starts empty, as a plain directory would (only e2fsck makes it again).
	_ = os.Remove(filepath.Join(dir, "lost+found"))
	return nil
}

// dataOwner parses DataOwner ("uid:gid"; "" is root).
func (s *Service) dataOwner() (uid, gid int, err error) {
	if s.cfg.DataOwner == "" {
		return 0, 0, nil
	}
	u, g, ok := strings.Cut(s.cfg.DataOwner, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("data_owner %q is not uid:gid", s.cfg.DataOwner)
	}
	return uid, gid, nil
}

func (s *Service) makeDataImage(ctx context.Context, img string, size int64) error {
	tmp := img + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// -m 0: no blocks reserved for root (the container's root would get
	// them); root_owner: /data belongs to the container's root (DataOwner).
	uid, gid, err := s.dataOwner()
	if err != nil {
		return err
	}
	// -J size=4: a 4 MiB journal, so an empty 10 GiB /data costs 8 MiB of
	// the node's disk instead of 69 MiB.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-J", "size=4", "-E",
		fmt.Sprintf("root_owner=%d:%d,nodiscard", uid, gid), tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("making the /data filesystem (mkfs.ext4): %v: %s", err, am.Clip(string(out), 300))
	}
	return os.Rename(tmp, img)
}

// releaseData unmounts the sliver's /data filesystem, if mounted. The
// container is gone by now; MNT_DETACH finishes the unmount once a last
// reader (an export under way) lets go.
func (s *Service) releaseData(id string) error {
	dir := s.st.dataDir(id)
	mounted, err := isMountPoint(dir)
	if errors.Is(err, os.ErrNotExist) || !mounted {
		return nil
	} else if err != nil {
		return err
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmounting %s: %w", dir, err)
	}
	return nil
}

// dataUsage measures /data: its filesystem's use when it has one, else
// nothing is reported (the walk would cost too much for a status).
func (s *Service) dataUsage(id string, quota int64) *agent.DataUsage {
	if quota <= 0 {
		return nil
	}
	dir := s.st.dataDir(id)
	if mounted, err := isMountPoint(dir); err != nil || !mounted {
		return nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return nil
	}
	bs := int64(fs.Bsize)
	u := &agent.DataUsage{UsedBytes: int64(fs.Blocks-fs.Bfree) * bs, LimitBytes: quota}
	// Full: ext4 keeps up to 2% (at most 4096 clusters, 16 MiB) back for
	// its own metadata, which no write can use; no inode left is full too.
	keep := min(u.LimitBytes/50, 16<<20) + 64<<10
	u.OverQuota = int64(fs.Bavail)*bs <= keep || fs.Ffree == 0
	return u
}

func overQuotaNote(u *agent.DataUsage) string {
	return "over quota: /data is full (" + strconv.FormatInt(u.UsedBytes, 10) + " bytes used of a " +
		strconv.FormatInt(u.LimitBytes, 10) + "-byte filesystem); writes fail until files are deleted"
}
