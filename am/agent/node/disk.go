package node

import (
	"syscall"

	"github.com/geniam/geniam/am/agent"
)

func diskOf(dir string) (agent.Disk, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return agent.Disk{}, err
	}
	return agent.Disk{FreeBytes: int64(fs.Bavail) * int64(fs.Bsize), TotalBytes: int64(fs.Blocks) * int64(fs.Bsize)}, nil
}
