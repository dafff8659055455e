package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// FetchOptions tune a fetch beyond the request.
type FetchOptions struct {
	AllowNoDigest bool // v1 compatibility: load without a digest (logged, marked unverified)
}

// Fetch starts loading the image of a sliver and returns at once with the
// sliver's status (state "fetching"); started is false when nothing new was
// started because the same image is already loaded or being loaded. Poll
// Status or call WaitFetch for the outcome.
func (s *Service) Fetch(ctx context.Context, id string, req agent.FetchRequest, opt FetchOptions) (st agent.Status, started bool, err error) {
	if err := agent.ValidID(id); err != nil {
		return agent.Status{}, false, err
	}
	validate := req.Validate
	if opt.AllowNoDigest {
		validate = req.ValidateV1
	}
	if err := validate(); err != nil {
		return agent.Status{}, false, err
	}
	src, err := s.checkImageURL(req.URL)
	if err != nil {
		return agent.Status{}, false, err
	}
	sl := s.get(id)
	for {
		sl.mu.Lock()
		if sl.rec != nil && sl.rec.Image.URL == req.URL && sl.rec.Image.SHA256 == req.SHA256 &&
			(sl.rec.Image.State == agent.ImageFetching || sl.rec.Image.State == agent.ImageReady) {
			st, err := s.status(ctx, sl)
			sl.mu.Unlock()
			return st, false, err
		}
		if sl.rec != nil && sl.rec.ContainerID != "" {
			sl.mu.Unlock()
			return agent.Status{}, false, am.Errorf(am.AlreadyExists, "sliver %s has a container from another image; kill it before fetching a new one", id)
		}
		if sl.fetchDone == nil {
			break
		}
		// Another image is being fetched for this sliver: cancel it, wait
		// for it to end, then look again.
		if err := sl.stopFetch(ctx, "fetch", id); err != nil {
			return agent.Status{}, false, err
		}
	}
	defer sl.mu.Unlock()
	now := time.Now().UTC()
	if sl.rec == nil {
		sl.rec = &record{ID: id, Created: now}
	}
	old := sl.rec.Image
	sl.rec.Image = imageRecord{URL: req.URL, SHA256: req.SHA256, State: agent.ImageFetching, StartedAt: now}
	setAggregate(sl.rec, req.Aggregate)
	if err := s.save(sl.rec); err != nil {
		sl.rec.Image = old
		return agent.Status{}, false, err
	}
	s.setImageRef(id, old.ID, "")
	if req.SHA256 == "" {
		s.log.Warn("agent: fetching an image without a digest (v1 request); it will be marked unverified", "sliver", id, "url", req.URL)
	}
	sl.fetchGen++
	fctx, cancel := context.WithTimeout(s.ctx, s.cfg.FetchTimeout)
	sl.fetchCancel, sl.fetchDone = cancel, make(chan struct{})
	s.wg.Add(1)
	go s.runFetch(fctx, cancel, sl, sl.fetchGen, src, req.SHA256, old.ID)
	st, err = s.status(ctx, sl)
	return st, true, err
}

func (s *Service) runFetch(ctx context.Context, cancel context.CancelFunc, sl *sliver, gen int, src imageSource, digest, oldImage string) {
	defer s.wg.Done()
	defer cancel()
	t0 := time.Now()
	var vr *verifyingReader
	imageID, err := func() (string, error) {
		body, size, err := s.open(ctx, src)
		if err != nil {
			return "", err
		}
		defer body.Close()
		if size > s.cfg.MaxImageBytes {
			return "", fmt.Errorf("image is %d bytes, over the limit of %d", size, s.cfg.MaxImageBytes)
		}
		vr = newVerifyingReader(body, digest, s.cfg.MaxImageBytes)
		guard := newUnpackGuard(vr, s.cfg.MaxImageUnpackedBytes)
		defer guard.Close()
		id, err := s.rt.LoadImage(ctx, guard)
		if _, verr := vr.result(); verr != nil {
			return "", verr // the reader's own failure says more than the engine's
		}
		if gerr := guard.verdict(); gerr != nil {
			return "", gerr
		}
		if err != nil {
			return "", fmt.Errorf("loading image: %w", err)
		}
		return id, nil
	}()
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("fetch took longer than %s: %w", s.cfg.FetchTimeout, err)
	}
	sl.mu.Lock()
	defer func() {
		close(sl.fetchDone)
		sl.fetchDone, sl.fetchCancel = nil, nil
		sl.mu.Unlock()
	}()
	if sl.fetchGen != gen || sl.rec == nil {
		// Superseded or deleted meanwhile: drop what we loaded, if nobody uses it.
		if err == nil {
			s.removeImageIfUnused(imageID)
		}
		return
	}
	img := &sl.rec.Image
	img.FinishedAt = time.Now().UTC()
	if vr != nil {
		img.Bytes, _ = vr.result()
	}
	if err != nil {
		img.State, img.Error = agent.ImageFailed, err.Error()
		s.log.Warn("agent: fetch failed", "sliver", sl.id, "url", img.URL, "err", err, "cause", errors.Unwrap(err), "took", time.Since(t0))
	} else {
		img.State, img.ID, img.Verified = agent.ImageReady, imageID, digest != ""
		s.setImageRef(sl.id, "", imageID)
		s.log.Info("agent: image loaded", "sliver", sl.id, "image", imageID, "bytes", img.Bytes, "verified", img.Verified, "took", time.Since(t0))
	}
	s.saveLogged(sl.rec)
	if err == nil && oldImage != "" && oldImage != imageID {
		s.removeImageIfUnused(oldImage)
	}
}

// WaitFetch blocks until no fetch is running for the sliver (or ctx ends)
// and returns its status.
func (s *Service) WaitFetch(ctx context.Context, id string) (agent.Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, err
	}
	done := sl.fetchDone
	sl.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return s.Status(ctx, id)
}
