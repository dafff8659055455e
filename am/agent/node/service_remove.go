package node

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

func (s *Service) removeRecord(id string) error {
	s.changes.bump(id)
	if err := s.st.remove(id); err != nil {
		return am.Wrap(am.ServerError, err, "could not remove the record of %s", id)
	}
	return nil
}

// RemoveImage forgets the sliver's image and deletes it from the engine
// unless another sliver of this agent uses the same image (or a container
// outside the agent does: the engine refuses, and the image stays). Only
// images this agent loaded are ever removed; nothing is pruned globally.
func (s *Service) RemoveImage(ctx context.Context, id string) error {
	return s.locked(id, func(sl *sliver) error { return s.removeImage(ctx, sl) })
}

func (s *Service) removeImage(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r == nil {
		return nil
	}
	if r.ContainerID != "" {
		return am.Errorf(am.Busy, "remove image: sliver %s still has a container; kill it first", sl.id)
	}
	if r.Image.State == agent.ImageFetching && sl.fetchCancel != nil {
		sl.fetchGen++ // the fetch's result is dropped (and its image removed) when it ends
		sl.fetchCancel()
	}
	imageID := r.Image.ID
	r.Image = imageRecord{State: agent.ImageNone}
	if err := s.save(r); err != nil {
		return err
	}
	if imageID != "" {
		s.setImageRef(sl.id, imageID, "")
		s.removeImageIfUnused(imageID)
	}
	return nil
}

// removeImageIfUnused deletes imageID from the engine unless a sliver's
// record still names it. The caller has already dropped its own reference.
func (s *Service) removeImageIfUnused(imageID string) {
	s.mu.Lock()
	users := len(s.imageRefs[imageID])
	s.mu.Unlock()
	if users > 0 {
		s.log.Info("agent: image kept, another sliver uses it", "image", imageID, "slivers", users)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	switch err := s.rt.RemoveImage(ctx, imageID); {
	case err == nil:
		s.log.Info("agent: image removed", "image", imageID)
	case errors.Is(err, agent.ErrInUse):
		s.log.Info("agent: image kept, a container outside this agent uses it", "image", imageID)
	default:
		s.log.Warn("agent: removing image", "image", imageID, "err", err)
	}
}

// Delete removes everything of a sliver: container, image (if unused),
// data, identity files and record. Deleting an unknown sliver is not an error.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := agent.ValidID(id); err != nil {
		return err
	}
	sl := s.get(id)
	for {
		sl.mu.Lock()
		if sl.fetchDone == nil {
			break
		}
		if err := sl.stopFetch(ctx, "delete", id); err != nil {
			return err
		}
	}
	defer sl.mu.Unlock()
	// A record that cannot be written (a full disk) must not stop Delete:
	// the record is about to go. Engine failures do stop it.
	if err := s.kill(ctx, sl); err != nil && am.CodeOf(err) != am.ServerError {
		return err
	}
	if err := s.removeImage(ctx, sl); err != nil && am.CodeOf(err) != am.ServerError {
		return err
	}
	if err := s.releaseData(id); err != nil {
		return am.Wrap(am.ServerError, err, "delete: could not unmount the /data of %s", id)
	}
	if err := os.RemoveAll(s.st.sliverDir(id)); err != nil {
		return am.Wrap(am.ServerError, err, "delete: could not remove the files of %s", id)
	}
	sl.rec = nil
	if err := s.removeRecord(id); err != nil {
		return err
	}
	s.log.Info("agent: sliver deleted", "sliver", id)
	return nil
}
