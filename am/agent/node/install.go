package node

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// services/install, as ProtoGENI does it: before the start command runs,
// each tarball is fetched (same URL policy, size cap and timeout as images)
// and unpacked into the container at its install_path, through the
// engine's archive API (the engine extracts inside the container's root,
// so a hostile tar cannot reach the host). A failure leaves the container
// created but not started, and the sliver failed with the reason.

// prepare runs before a created container's first start: the shell check
// and the installs. Its error is the sliver's failure.
func (s *Service) prepare(ctx context.Context, cid string, req *agent.StartRequest) error {
	if req.Shell != "" {
		if ex, ok := s.rt.(agent.Execer); ok {
			if has, err := ex.PathExists(ctx, cid, "/bin/sh"); err == nil && !has {
				return am.Errorf(am.BadArgs, "the image has no /bin/sh, so services/execute shell=%q cannot run; use shell=\"exec\" (the command is split on blanks and run directly)", "sh")
			}
		}
	}
	if len(req.Install) == 0 {
		return nil
	}
	cp, ok := s.rt.(agent.Copier)
	if !ok {
		return am.Errorf(am.Unsupported, "this agent's runtime cannot unpack services/install archives")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	for _, in := range req.Install {
		t0 := time.Now()
		n, err := s.installOne(ctx, cp, cid, in)
		if err != nil {
			return am.Errorf(am.Error, "install of %s at %s failed: %s", am.Clip(in.URL, 200), in.Path, am.MessageOf(err))
		}
		s.log.Info("agent: install unpacked", "container", cid, "url", in.URL, "path", in.Path, "bytes", n, "took", time.Since(t0))
	}
	return nil
}

func (s *Service) installOne(ctx context.Context, cp agent.Copier, cid string, in agent.Install) (int64, error) {
	src, err := s.checkImageURL(in.URL)
	if err != nil {
		return 0, err
	}
	if err := cp.CopyTo(ctx, cid, "/", bytes.NewReader(dirsTar(in.Path))); err != nil {
		return 0, fmt.Errorf("creating %s: %w", in.Path, err)
	}
	body, size, err := s.open(ctx, src)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if size > s.cfg.MaxImageBytes {
		return 0, fmt.Errorf("the archive is %d bytes, over the limit of %d", size, s.cfg.MaxImageBytes)
	}
	vr := newVerifyingReader(body, "", s.cfg.MaxImageBytes)
	err = cp.CopyTo(ctx, cid, in.Path, vr)
	n, verr := vr.result()
	if verr != nil {
		return n, verr
	}
	if err != nil {
		return n, fmt.Errorf("unpacking: %w", err)
	}
	return n, nil
}

// dirsTar is a tar of the directories leading to dir (relative to /), so
// that unpacking it at / creates install_path.
func dirsTar(dir string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	p := ""
	for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
		if part == "" {
			continue
		}
		p += part + "/"
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	_ = tw.Close()
	return b.Bytes()
}
