package agent

import "syscall"

// Disk is the space of the filesystem holding the agent's state directory
// (records, /data, /geni), as GET /v2/ping reports it, so that the
// aggregate can show disk pressure before a full disk gets in the way.
type Disk struct {
	FreeBytes  int64 `json:"disk_free_bytes"`
	TotalBytes int64 `json:"disk_total_bytes"`
}

func diskOf(dir string) (Disk, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return Disk{}, err
	}
	return Disk{FreeBytes: int64(fs.Bavail) * int64(fs.Bsize), TotalBytes: int64(fs.Blocks) * int64(fs.Bsize)}, nil
}
