package server

import (
	"context"
	"fmt"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, unlock, err := s.lockContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := c.ID
	if c.State != metadata.ContainerCreated {
		return nil, fmt.Errorf("container %s is %s, not created: %w", id, c.State, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return nil, err
	}
	if err := s.nriStartContainer(ctx, sb, c); err != nil {
		return nil, err
	}
	// Taken before the start: a process that exits at once must not look
	// as if it finished before it started.
	startedAt := time.Now()
	started, err := sh.Task.Start(context.WithoutCancel(ctx), &taskapi.StartRequest{ID: id})
	if err != nil {
		err = taskErr(err)
		// As containerd does: the container is done, and says why.
		s.store.UpdateContainer(id, func(rec *metadata.Container) error {
			rec.State = metadata.ContainerExited
			rec.ExitCode = 128
			rec.Reason = "StartError"
			rec.Message = err.Error()
			rec.FinishedAt = time.Now()
			return nil
		})
		s.nriStopContainer(context.WithoutCancel(ctx), id)
		return nil, fmt.Errorf("start container %s: %w", id, err)
	}
	updated, err := s.store.UpdateContainer(id, func(rec *metadata.Container) error {
		rec.StartedAt = startedAt
		rec.PID = started.GetPid()
		// A container that exits at once may already be recorded as
		// exited by its exit event; that stays.
		if rec.State == metadata.ContainerCreated {
			rec.State = metadata.ContainerRunning
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("container started", "pod", c.SandboxID, "container", id)
	s.hub.publish(s.containerEvent(updated, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	s.nriPostStartContainer(ctx, sb, updated)
	return &runtimeapi.StartContainerResponse{}, nil
}
