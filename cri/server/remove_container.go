package server

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveContainer removes a container, killing it first if it runs.
// Removing a container that is not there is not an error.
func (s *Server) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, unlock, err := s.lockContainer(ctx, r.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.removeContainerLocked(context.WithoutCancel(ctx), c); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// removeContainerLocked removes c; the caller holds c's lock (or its pod's).
func (s *Server) removeContainerLocked(ctx context.Context, c metadata.Container) error {
	if err := s.stopContainerLocked(ctx, c, 0); err != nil {
		return err
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err == nil {
		if err := s.deleteTask(ctx, sb, c.ID, c.Bundle); err != nil {
			return err
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	s.nriRemoveContainer(ctx, c)
	bundle := s.paths.containerBundle(c.ID)
	// The shim unmounts the rootfs on delete; a shim that died did not.
	// Image volumes and ID-mapped layers are corrald's to unmount.
	if err := imagevolume.Unmount(imagevolume.Dir(bundle)); err != nil {
		return fmt.Errorf("container %s: %w", c.ID, err)
	}
	if err := removeBundle(bundle); err != nil {
		return fmt.Errorf("remove the bundle of %s: %w", c.ID, err)
	}
	if err := os.RemoveAll(s.paths.containerRoot(c.ID)); err != nil {
		return err
	}
	if err := s.store.DeleteContainer(c.ID); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	s.log.Info("container removed", "pod", c.SandboxID, "container", c.ID)
	if s.images != nil {
		// The image may have been removed while this container held its
		// layers; now nothing does.
		if _, err := s.images.Get(c.ImageID); errdefs.IsNotFound(err) {
			if err := s.images.GC(ctx); err != nil {
				s.log.Warn("image gc after container removal", "error", err)
			}
		}
	}
	c.State = metadata.ContainerExited
	s.hub.publish(s.containerEvent(c, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT))
	return nil
}
